import Foundation
import MobileSD

/// Owns the loaded pipeline off the main actor (loading and generating take seconds to minutes). One bundle
/// and one setting of compute units / reduce-memory at a time; changing either reloads.
actor PipelineService {
    struct Prepared: Sendable {
        var bundleId: String
        var schedulers: [SchedulerKind]
        var defaultScheduler: SchedulerKind
        var defaultGuidance: Double
        var verifySeconds: Double
        var load: LoadTiming
    }

    private var pipeline: StableDiffusionPipeline?
    private var key: String?
    private var prepared: Prepared?

    /// Opens (verifying every file's SHA-256) and loads the bundle, unless it is the one already loaded.
    func prepare(bundle url: URL, computeUnits: ComputeUnits, reduceMemory: Bool) throws -> Prepared {
        let newKey = "\(url.path)|\(computeUnits.rawValue)|\(reduceMemory)"
        if newKey == key, let prepared { return prepared }
        pipeline?.unloadResources()
        pipeline = nil
        let bundle = try ModelBundle(url: url)
        let p = try StableDiffusionPipeline(bundle: bundle, runtime: try CoreMLRuntime(computeUnits: computeUnits),
                                            reduceMemory: reduceMemory)
        // compile (first launch) and load now, so the first image does not pay for it
        let load = reduceMemory ? try p.resources.prewarmResources() : try p.loadResources()
        let m = bundle.manifest
        let info = Prepared(bundleId: m.bundleId, schedulers: m.supportedSchedulers, defaultScheduler: m.defaultScheduler,
                            defaultGuidance: m.defaultGuidance, verifySeconds: bundle.verifySeconds, load: load)
        pipeline = p
        key = newKey
        prepared = info
        return info
    }

    func generate(_ config: GenerationConfiguration,
                  progress: @escaping @Sendable (Int, Int) -> Void) throws -> (RawImage, StageTimes) {
        guard let pipeline else { throw MobileSDError("no bundle is loaded", fix: "choose a bundle first") }
        var times = StageTimes()
        let image = try pipeline.generateImage(config, times: &times) { step, steps in
            progress(step, steps)
            return true
        }
        return (image, times)
    }

    /// The benchmark protocol (docs/latency-report.md); writes the report into `directory` and returns its URL.
    func benchmark(_ config: GenerationConfiguration, warmup: Int, repeats: Int,
                   directory: URL) throws -> (RawImage, StageTimes, URL) {
        guard let pipeline, let prepared else { throw MobileSDError("no bundle is loaded", fix: "choose a bundle first") }
        let result = try Benchmark.run(pipeline, config, warmup: warmup, repeats: repeats, initialLoad: prepared.load)
        let report = try LatencyReport.make(result, pipeline: pipeline)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "-")
        let url = directory.appendingPathComponent("latency-\(prepared.bundleId)-\(stamp).json")
        try LatencyReport.write(report, to: url)
        return (result.image, result.runs.last ?? StageTimes(), url)
    }
}
