import Foundation
import MobileSD

/// mobilesd-ios-overhead: the client core's own time per denoising step, with the graphs replaced by
/// synthetic runners (SyntheticRuntime: inputs copied in, preallocated outputs of the manifest's shapes
/// copied out, no compute). Run on a bundle folder whose manifest has SD 1.5's chunk tensors
/// (benchmarks/ios_core_overhead.py writes one). Prints one JSON object on stdout:
///   step_s           every step's wall time (the whole step: CFG, chunk chain, scheduler)
///   in_graph_calls_s per step, the time inside the runners' run(): the tensor copies in and out
///   outside_calls_s  per step, the rest: scheduler, CFG, batch concat/split, chunk bookkeeping
func argument(_ name: String, _ fallback: String) -> String {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return fallback }
    return args[i + 1]
}

do {
    let bundle = try ModelBundle(url: URL(fileURLWithPath: argument("--bundle", ".")))
    let steps = Int(argument("--steps", "20"))!, warmup = Int(argument("--warmup", "1"))!
    let repeats = Int(argument("--repeats", "3"))!
    let scheduler = try SchedulerKind.named(argument("--scheduler", "dpm"))
    let runtime = SyntheticRuntime()
    let pipeline = try StableDiffusionPipeline(bundle: bundle, runtime: runtime)
    try pipeline.loadResources()
    let config = GenerationConfiguration(prompt: "a photo of an astronaut riding a horse on mars", steps: steps,
                                         guidance: 7.5, seed: 0, scheduler: scheduler)
    let result = try Benchmark.run(pipeline, config, warmup: warmup, repeats: repeats, initialLoad: LoadTiming())
    let out: JSONValue = [
        "bundle_id": .string(bundle.manifest.bundleId),
        "unet_batch": .number(Double(bundle.manifest.unetBatch)),
        "chunks": .number(Double(bundle.manifest.unetChunks.count)),
        "latent_shape": .array(([1] + bundle.manifest.latentShape).map { .number(Double($0)) }),
        "scheduler": .string(scheduler.rawValue), "steps": .number(Double(steps)),
        "warmup": .number(Double(warmup)), "repeats": .number(Double(repeats)),
        "unet_calls_per_step": .number(Double(runtime.runners.filter { $0.graph.role == "unet" }.map(\.calls).reduce(0, +))
                                       / Double((warmup + repeats) * steps)),
        "step_s": .array(result.runs.flatMap(\.steps).map { .number($0) }),
        "in_graph_calls_s": .array(result.runs.flatMap { $0.stepChunks.map { .number($0.reduce(0, +)) } }),
        "outside_calls_s": .array(result.runs.flatMap(\.stepOverhead).map { .number($0) }),
    ]
    FileHandle.standardOutput.write(try out.serialized(pretty: false))
    FileHandle.standardOutput.write(Data("\n".utf8))
} catch {
    FileHandle.standardError.write(Data("mobilesd-ios-overhead: error: \(error)\n".utf8))
    exit(2)
}
