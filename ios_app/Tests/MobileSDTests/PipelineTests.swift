import Foundation
import XCTest
@testable import MobileSD

/// The generation loop on synthetic graphs: CFG batching, chunk chaining with aliases, reduce-memory loading,
/// guidance off, and the latency report (validated against the repository's latency-report schema).
final class PipelineTests: XCTestCase {
    func generate(unetBatch: Int, chunks: Int, reduceMemory: Bool = false, guidance: Double? = nil,
                  scheduler: SchedulerKind = .dpm) throws -> (RawImage, StableDiffusionPipeline, SyntheticRuntime, StageTimes) {
        let root = try SyntheticBundle.write(unetBatch: unetBatch, chunks: chunks)
        defer { try? FileManager.default.removeItem(at: root) }
        let bundle = try ModelBundle(url: root, schema: try JSONSchemaValidator(contentsOf: SyntheticBundle.manifestSchema))
        let runtime = SyntheticRuntime(body: SyntheticBundle.graphs)
        let pipeline = try StableDiffusionPipeline(bundle: bundle, runtime: runtime, reduceMemory: reduceMemory)
        try pipeline.loadResources()
        var times = StageTimes()
        let image = try pipeline.generateImage(GenerationConfiguration(prompt: "a handwritten digit seven", steps: 4,
                                                                       guidance: guidance, seed: 3, scheduler: scheduler),
                                               times: &times)
        return (image, pipeline, runtime, times)
    }

    func testBatchedAndSequentialCFGAgree() throws {
        let (batched, _, rt2, _) = try generate(unetBatch: 2, chunks: 1)
        let (sequential, _, rt1, _) = try generate(unetBatch: 1, chunks: 1)
        XCTAssertEqual(batched.rgba, sequential.rgba)
        XCTAssertEqual(rt2.runners.first { $0.graph.name == "unet" }?.calls, 4)
        XCTAssertEqual(rt1.runners.first { $0.graph.name == "unet" }?.calls, 8)
        XCTAssertEqual(rt2.runners.first { $0.graph.name == "text_encoder" }?.calls, 2)
    }

    func testChunkChainEqualsOneGraph() throws {
        for scheduler in SchedulerKind.allCases {
            let (one, _, _, _) = try generate(unetBatch: 2, chunks: 1, scheduler: scheduler)
            let (two, _, rt, times) = try generate(unetBatch: 2, chunks: 2, scheduler: scheduler)
            XCTAssertEqual(one.rgba, two.rgba, scheduler.rawValue)
            XCTAssertEqual(rt.runners.filter { $0.graph.role == "unet" }.map(\.calls), [4, 4])
            XCTAssertEqual(times.stepChunks.count, 4)
            XCTAssertEqual(times.stepChunks[0].count, 2)
        }
    }

    func testGuidanceAffectsTheImageAndOneTurnsItOff() throws {
        let (guided, _, _, _) = try generate(unetBatch: 2, chunks: 1, guidance: 7.5)
        let (plain, _, rt, _) = try generate(unetBatch: 1, chunks: 1, guidance: 1)
        XCTAssertNotEqual(guided.rgba, plain.rgba)
        XCTAssertEqual(rt.runners.first { $0.graph.name == "unet" }?.calls, 4)   // one call per step without CFG
    }

    func testReduceMemoryLoadsEachStageWhenItRuns() throws {
        let (normal, p0, rt0, _) = try generate(unetBatch: 2, chunks: 2)
        let (reduced, p1, rt1, times) = try generate(unetBatch: 2, chunks: 2, reduceMemory: true)
        XCTAssertEqual(normal.rgba, reduced.rgba)
        XCTAssertEqual(rt0.runners.map(\.loads), [1, 1, 1, 1])
        XCTAssertTrue(rt0.runners.allSatisfy(\.isLoaded))
        XCTAssertEqual(rt1.runners.map(\.loads), [1, 1, 1, 1])
        XCTAssertFalse(rt1.runners.contains(where: \.isLoaded), "reduce-memory mode leaves nothing loaded")
        XCTAssertEqual(p0.resources.loadLog.count, 4)
        XCTAssertEqual(p1.resources.loadLog.count, 4)
        XCTAssertGreaterThanOrEqual(times.loads.loadSeconds, 0)
    }

    func testUnsupportedSchedulerIsRefused() throws {
        let root = try SyntheticBundle.write()
        defer { try? FileManager.default.removeItem(at: root) }
        var manifest = try SyntheticBundle.manifestJSON(root).object!
        var scheduler = manifest["scheduler"]!.object!
        scheduler["supported"] = ["dpm"]
        manifest["scheduler"] = .object(scheduler)
        try JSONValue.object(manifest).serialized().write(to: root.appendingPathComponent("manifest.json"))
        let pipeline = try StableDiffusionPipeline(bundle: try ModelBundle(url: root), runtime: SyntheticRuntime(body: SyntheticBundle.graphs))
        XCTAssertThrowsError(try pipeline.makeScheduler(GenerationConfiguration(prompt: "x", scheduler: .lcm))) { error in
            XCTAssertTrue("\(error)".contains("does not support the lcm scheduler"), "\(error)")
        }
    }

    func testLatencyReportFollowsTheSchema() throws {
        let root = try SyntheticBundle.write(unetBatch: 2, chunks: 2)
        defer { try? FileManager.default.removeItem(at: root) }
        let pipeline = try StableDiffusionPipeline(bundle: try ModelBundle(url: root), runtime: SyntheticRuntime(body: SyntheticBundle.graphs))
        let load = try pipeline.loadResources()
        let config = GenerationConfiguration(prompt: "a digit", steps: 3, seed: 1, scheduler: .euler)
        let result = try Benchmark.run(pipeline, config, warmup: 1, repeats: 2, initialLoad: load)
        XCTAssertEqual(result.runs.count, 2)
        let report = try LatencyReport.make(result, pipeline: pipeline)
        let problems = try JSONSchemaValidator(contentsOf: SyntheticBundle.latencySchema).problems(report)
        XCTAssertEqual(problems, [])
        XCTAssertEqual(report["measured_by"]?["kind"]?.string, "app")
        XCTAssertEqual(report["stages"]?["unet_step"]?["samples_s"]?.array?.count, 6)
        XCTAssertEqual(report["stages"]?["unet_chunk_1"]?["calls_per_run"]?.int, 3)
        XCTAssertEqual(report["steps"]?.array?.count, 3)
        XCTAssertEqual(report["settings"]?["cfg_mode"]?.string, "batch")
        XCTAssertEqual(report["bundle"]?["manifest_sha256"]?.string, pipeline.bundle.manifestSHA256)
        #if os(Linux)
        XCTAssertTrue(report["notes"]?.string?.contains("Not a phone") == true)
        XCTAssertTrue(report["device"]?["name"]?.string?.contains("not a phone") == true)
        #endif
        // strict JSON: serializable, and it refuses non-finite numbers
        XCTAssertNoThrow(try report.serialized())
        XCTAssertThrowsError(try JSONValue.number(.nan).serialized())
    }
}
