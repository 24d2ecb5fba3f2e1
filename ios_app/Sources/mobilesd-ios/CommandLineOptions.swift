import Foundation
import MobileSD

/// The flags of `mobilesd-ios`, named as `mobilesd generate` / `mobilesd app` name them. Parsed by hand: the
/// package takes no dependencies (swift-argument-parser would have to be fetched from GitHub, which the
/// Linux build here cannot reach), and the flags are few and flat.
struct CommandLineOptions {
    var bundle = ""
    var prompt = ""
    var negativePrompt: String?
    var steps = 20
    var guidance: Double?
    var seed: UInt64 = 0
    var scheduler: SchedulerKind?
    var computeUnits = ComputeUnits.cpuAndNeuralEngine
    var reduceMemory = false
    var out = "image.png"
    var report: String?
    var warmup = 1
    var repeats = 3
    var threads: Int?
    var manifestSchema: String?
    var result: String?
    var quiet = false

    static let usage = """
        usage: mobilesd-ios --bundle DIR --prompt TEXT [--negative-prompt TEXT] [--steps N] [--guidance G]
                            [--seed S] [--scheduler dpm|euler|ddim|lcm]
                            [--compute-units cpuAndNeuralEngine|cpuAndGPU|all|cpuOnly] [--reduce-memory]
                            [--out image.png] [--report report.json --warmup W --repeats R]
                            [--threads N] [--manifest-schema manifest.schema.json] [--result result.json] [--quiet]

        Runs a mobilesd bundle through the MobileSD Swift pipeline: Core ML packages (ios bundles, on Apple
        platforms) or ONNX graphs (onnx bundles, ONNX Runtime). --report also runs the benchmark protocol
        (W untimed then R timed generations) and writes a latency report (docs/latency-report.md).
        --result writes the outcome as JSON ({"ok": true, ...} or {"ok": false, "problem", "fix"}) for tools.
        """

    static func parse(_ args: [String]) throws -> CommandLineOptions {
        var o = CommandLineOptions()
        var i = 0
        func value(_ flag: String) throws -> String {
            i += 1
            guard i < args.count else { throw MobileSDError("\(flag) needs a value", fix: "see --help") }
            return args[i]
        }
        func integer(_ flag: String, min: Int) throws -> Int {
            let text = try value(flag)
            guard let n = Int(text), n >= min else {
                throw MobileSDError("\(flag) \(text) is not an integer >= \(min)", fix: "e.g. \(flag) \(max(min, 1))")
            }
            return n
        }
        var seen: Set<String> = []
        while i < args.count {
            let flag = args[i]
            switch flag {
            case "--bundle": o.bundle = try value(flag)
            case "--prompt": o.prompt = try value(flag)
            case "--negative-prompt": o.negativePrompt = try value(flag)
            case "--steps": o.steps = try integer(flag, min: 1)
            case "--guidance":
                let text = try value(flag)
                guard let g = Double(text), g.isFinite, g >= 0 else {
                    throw MobileSDError("--guidance \(text) is not a number >= 0", fix: "e.g. --guidance 7.5")
                }
                o.guidance = g
            case "--seed":
                let text = try value(flag)
                guard let s = UInt64(text) else {
                    throw MobileSDError("--seed \(text) is not a non-negative integer", fix: "e.g. --seed 42")
                }
                o.seed = s
            case "--scheduler": o.scheduler = try SchedulerKind.named(try value(flag))
            case "--compute-units": o.computeUnits = try ComputeUnits.named(try value(flag))
            case "--reduce-memory": o.reduceMemory = true
            case "--out": o.out = try value(flag)
            case "--report": o.report = try value(flag)
            case "--warmup": o.warmup = try integer(flag, min: 0)
            case "--repeats": o.repeats = try integer(flag, min: 1)
            case "--threads": o.threads = try integer(flag, min: 1)
            case "--manifest-schema": o.manifestSchema = try value(flag)
            case "--result": o.result = try value(flag)
            case "--quiet": o.quiet = true
            case "-h", "--help": throw HelpRequested()
            default:
                throw MobileSDError("unknown argument \(flag)", fix: "see mobilesd-ios --help")
            }
            seen.insert(flag)
            i += 1
        }
        for required in ["--bundle", "--prompt"] where !seen.contains(required) {
            throw MobileSDError("\(required) is required", fix: "see mobilesd-ios --help")
        }
        return o
    }
}

struct HelpRequested: Error {}
