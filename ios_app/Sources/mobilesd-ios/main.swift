import Foundation
import MobileSD
#if canImport(MobileSDONNX)
import MobileSDONNX
#endif

/// mobilesd-ios: the MobileSD pipeline as a command-line tool (macOS with Core ML; Linux and macOS with
/// ONNX Runtime). `mobilesd app ios` runs it on this machine.
func log(_ message: String, quiet: Bool = false) {
    guard !quiet else { return }
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

func makeRuntime(for bundle: ModelBundle, _ options: CommandLineOptions) throws -> GraphRuntime {
    let formats = Set(bundle.manifest.graphs.map(\.format))
    if formats == ["mlpackage"] {
        #if canImport(CoreML)
        return try CoreMLRuntime(computeUnits: options.computeUnits)
        #else
        throw MobileSDError("this bundle holds Core ML packages, which run only on Apple platforms",
                            fix: "run it on a Mac or iPhone, or export an ONNX bundle (--target onnx) to run it here")
        #endif
    }
    if formats == ["onnx"] {
        #if canImport(MobileSDONNX)
        return try OnnxRuntime(threads: options.threads)
        #else
        throw MobileSDError("this build of mobilesd-ios has no ONNX Runtime", fix: "build it with MOBILESD_ONNX=1")
        #endif
    }
    throw MobileSDError("this bundle holds \(formats.sorted().joined(separator: ", ")) graphs, which this client does not run",
                        fix: "export with --target ios (Core ML) or --target onnx; TFLite bundles run in `mobilesd app android`")
}

/// Runs the CLI; returns what `--result` reports on success.
func run(_ options: CommandLineOptions) throws -> [String: JSONValue] {
    let q = options.quiet
    let schema = try options.manifestSchema.map { try JSONSchemaValidator(contentsOf: URL(fileURLWithPath: $0)) }
    let bundle = try ModelBundle(url: URL(fileURLWithPath: options.bundle), schema: schema)
    log(String(format: "verified %d bundle files (%.1f MiB, SHA-256) in %.2f s", bundle.verifiedFiles,
               Double(bundle.verifiedBytes) / 1_048_576, bundle.verifySeconds), quiet: q)
    if !bundle.manifest.fusedLoRAs.isEmpty {
        log("LoRA fused into this bundle: " + bundle.manifest.fusedLoRAs.map { "\($0.file) x \($0.scale)" }
            .joined(separator: ", "), quiet: q)
    }
    let runtime = try makeRuntime(for: bundle, options)
    let pipeline = try StableDiffusionPipeline(bundle: bundle, runtime: runtime, reduceMemory: options.reduceMemory)
    let config = GenerationConfiguration(prompt: options.prompt, negativePrompt: options.negativePrompt,
                                         steps: options.steps, guidance: options.guidance, seed: options.seed,
                                         scheduler: options.scheduler)
    _ = try pipeline.makeScheduler(config)   // refuse an unsupported scheduler before loading anything
    let load = try pipeline.loadResources()
    if !options.reduceMemory {
        log("loaded \(bundle.manifest.graphs.count) graphs with \(runtime.version): "
            + String(format: "compile %.3f s, load %.3f s", load.compileSeconds, load.loadSeconds), quiet: q)
    }
    let result = try Benchmark.run(pipeline, config, warmup: options.report == nil ? 0 : options.warmup,
                                   repeats: options.report == nil ? 1 : options.repeats, initialLoad: load) { k, warm, t in
        log("generation \(k + 1)\(warm ? " (warm-up)" : ""): "
            + String(format: "%.3f s (text encoder %.3f s, %d steps, median step %.4f s, decoder %.3f s)",
                     t.endToEnd, t.textEncoder, t.steps.count, Statistics.median(t.steps), t.decoder), quiet: q)
    }
    // everything is computed before anything is written: a failed run leaves no output behind
    let png = PNGWriter.encode(result.image)
    let reportData = try options.report.map { _ in try LatencyReport.make(result, pipeline: pipeline).serialized() }
    let out = URL(fileURLWithPath: options.out)
    try FileManager.default.createDirectory(at: out.deletingLastPathComponent(), withIntermediateDirectories: true)
    try png.write(to: out, options: .atomic)
    let scheduler = try pipeline.makeScheduler(config)
    print("wrote \(out.path) (\(result.image.width)x\(result.image.height), \(runtime.name), "
          + "\(scheduler.timesteps.count) \(scheduler.kind.rawValue) steps, seed \(options.seed))")
    var summary: [String: JSONValue] = [
        "ok": true, "image": .string(out.path), "width": .number(Double(result.image.width)),
        "height": .number(Double(result.image.height)), "runtime": .string(runtime.version),
        "scheduler": .string(scheduler.kind.rawValue), "steps": .number(Double(scheduler.timesteps.count)),
        "verified_files": .number(Double(bundle.verifiedFiles)),
        "end_to_end_s": .array(result.runs.map { .number($0.endToEnd) }),
    ]
    if let path = options.report, let reportData {
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try reportData.write(to: url, options: .atomic)
        print("wrote \(url.path) (latency report, \(options.warmup) warm-up + \(options.repeats) timed runs)")
        summary["report"] = .string(url.path)
    }
    return summary
}

func writeResult(_ path: String?, _ value: [String: JSONValue]) {
    guard let path else { return }
    try? JSONValue.object(value).serialized().write(to: URL(fileURLWithPath: path), options: .atomic)
}

let arguments = Array(CommandLine.arguments.dropFirst())
// --result is read before parsing, so even a bad command line reports through it
let resultPath = arguments.firstIndex(of: "--result").flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
do {
    writeResult(resultPath, try run(try CommandLineOptions.parse(arguments)))
    exit(0)
} catch is HelpRequested {
    print(CommandLineOptions.usage)
    exit(0)
} catch let error as MobileSDError {
    log("mobilesd-ios: error: \(error.description)")
    writeResult(resultPath, ["ok": false, "problem": .string(error.problem), "fix": error.fix.map { .string($0) } ?? .null])
    exit(2)
} catch {
    log("mobilesd-ios: error: \(error)")
    writeResult(resultPath, ["ok": false, "problem": .string("mobilesd-ios failed: \(error)"), "fix": .null])
    exit(1)
}
