import Foundation

/// The benchmark protocol of docs/latency-report.md: `warmup` untimed generations, then `repeats` timed ones
/// of the same configuration; every sample is kept. Load is measured once, split into compile and load.
public struct BenchmarkResult: Sendable {
    public var configuration: GenerationConfiguration
    public var warmup: Int
    public var repeats: Int
    public var initialLoad: LoadTiming
    public var runs: [StageTimes]
    public var image: RawImage
}

public enum Benchmark {
    public static func run(_ pipeline: StableDiffusionPipeline, _ config: GenerationConfiguration, warmup: Int,
                           repeats: Int, initialLoad: LoadTiming,
                           onRun: ((Int, Bool, StageTimes) -> Void)? = nil) throws -> BenchmarkResult {
        guard warmup >= 0, repeats >= 1 else {
            throw MobileSDError("--warmup \(warmup) / --repeats \(repeats) are out of range", fix: "use --warmup >= 0 and --repeats >= 1")
        }
        var runs: [StageTimes] = []
        var image: RawImage?
        for k in 0..<(warmup + repeats) {
            var times = StageTimes()
            image = try pipeline.generateImage(config, times: &times)
            if k >= warmup { runs.append(times) }
            onRun?(k, k < warmup, times)
        }
        return BenchmarkResult(configuration: config, warmup: warmup, repeats: repeats, initialLoad: initialLoad,
                               runs: runs, image: image!)
    }
}
