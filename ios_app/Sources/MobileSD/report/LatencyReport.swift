import Foundation

/// Writes a latency report (schema 1.x, docs/latency-report.md, mobilesd/latency/latency_report.schema.json)
/// from benchmark runs, so `mobilesd report` shows the app beside host and estimate reports.
public enum LatencyReport {
    public static let schemaVersion = "1.0"
    public static let tool = "MobileSD iOS core 0.1.0 (Swift)"

    public static func make(_ result: BenchmarkResult, pipeline: StableDiffusionPipeline,
                            device: DeviceInfo = .current(), created: Date = Date()) throws -> JSONValue {
        let m = pipeline.bundle.manifest
        let runtime = pipeline.runtime
        let config = result.configuration
        let scheduler = try pipeline.makeScheduler(config)
        let steps = scheduler.timesteps.count
        let cfg = pipeline.usesGuidance(config)
        let cfgMode = !cfg ? "none" : (m.unetBatch == 2 ? "batch" : "sequential")
        let nChunks = m.unetChunks.count
        let runs = result.runs

        func stage(_ samples: [Double], calls: Int? = nil) -> JSONValue {
            var o: [String: JSONValue] = [
                "median_s": .number(Statistics.median(samples)), "samples_s": .array(samples.map { .number($0) }),
                "min_s": .number(samples.min() ?? 0), "max_s": .number(samples.max() ?? 0),
                "mean_s": .number(samples.reduce(0, +) / Double(max(samples.count, 1))),
                "stdev_s": .number(Statistics.stdev(samples)),
            ]
            if samples.count >= 2 { o["p90_s"] = .number(Statistics.p90(samples)) }
            if let calls { o["calls_per_run"] = .number(Double(calls)) }
            return .object(o)
        }

        let load = result.initialLoad
        var stages: [String: JSONValue] = [
            "load": stage([load.compileSeconds + load.loadSeconds], calls: 1),
            "text_encoder": stage(runs.map(\.textEncoder)),
            "unet_step": stage(runs.flatMap(\.steps), calls: steps),
            "vae_decoder": stage(runs.map(\.decoder)),
            "end_to_end": stage(runs.map(\.endToEnd)),
        ]
        if nChunks > 1 {
            for i in 0..<nChunks { stages["unet_chunk_\(i)"] = stage(runs.flatMap { $0.stepChunks.map { $0[i] } }, calls: steps) }
        }
        let timeline: [JSONValue] = (0..<steps).map { k in
            var entry: [String: JSONValue] = ["index": .number(Double(k)),
                                              "seconds": .number(Statistics.median(runs.map { $0.steps[k] }))]
            if nChunks > 1 {
                entry["chunks_s"] = .array((0..<nChunks).map { i in .number(Statistics.median(runs.map { $0.stepChunks[k][i] })) })
            }
            return .object(entry)
        }
        let overhead = Statistics.median(runs.flatMap(\.stepOverhead))
        let reloads = runs.map { $0.loads.compileSeconds + $0.loads.loadSeconds }
        var notes = [
            String(format: "load = compile %.3f s + load %.3f s ", load.compileSeconds, load.loadSeconds)
                + (runtime.name == "coreml"
                    ? "(compile: .mlpackage to .mlmodelc, first launch only, cached; load: MLModel(contentsOf:), "
                        + "which includes the Neural Engine specialization on a device's first load)."
                    : "(ONNX Runtime has no separate compile step: session creation is the load)."),
            String(format: "Client overhead outside graph calls (scheduler, CFG, copies, chunk bookkeeping): median %.6f s per step.", overhead),
            "Bundle verified (SHA-256 of \(pipeline.bundle.verifiedFiles) files, \(pipeline.bundle.verifiedBytes) bytes) in "
                + String(format: "%.3f s before loading.", pipeline.bundle.verifySeconds),
        ]
        if !m.fusedLoRAs.isEmpty {
            notes.append("LoRA fused into the weights at export: "
                         + m.fusedLoRAs.map { "\($0.file) x \($0.scale)" }.joined(separator: ", ") + ".")
        }
        if pipeline.resources.reduceMemory {
            notes.append(String(format: "reduce-memory mode: each stage loads before it runs and unloads after; "
                                + "the stage times include those loads (median %.3f s per image).",
                                Statistics.median(reloads)))
        }
        if !device.isPhone {
            notes.insert("Not a phone: the MobileSD iOS app core (Swift) run as a command-line tool on \(device.os) "
                         + "with \(runtime.name) on the CPU; the timings say nothing about an iPhone.", at: 0)
        }
        var deviceJSON: [String: JSONValue] = ["name": .string(device.name), "os": .string(device.os),
                                               "accelerator": .string(device.isPhone ? runtime.accelerator : "cpu"),
                                               "cpu_threads": .number(Double(device.cpuThreads))]
        if let model = device.model { deviceJSON["model"] = .string(model) }
        if let soc = device.soc { deviceJSON["soc"] = .string(soc) }
        var runtimeJSON: [String: JSONValue] = ["name": .string(runtime.name), "version": .string(runtime.version),
                                                "precision": .string(m.precision)]
        runtimeJSON["delegate"] = runtime.delegate.map { .string($0) } ?? .null
        var settings: [String: JSONValue] = [
            "width": .number(Double(m.imageWidth)), "height": .number(Double(m.imageHeight)), "steps": .number(Double(steps)),
            "scheduler": .string(scheduler.kind.rawValue), "cfg_mode": .string(cfgMode), "batch_size": 1,
            "seed": .number(Double(config.seed)), "prompt": .string(config.prompt),
        ]
        if cfg { settings["guidance"] = .number(config.guidance ?? m.defaultGuidance) }
        var bundleJSON: [String: JSONValue] = ["id": .string(m.bundleId), "manifest_sha256": .string(pipeline.bundle.manifestSHA256)]
        if !m.sourceModel.isEmpty { bundleJSON["model"] = .string(URL(fileURLWithPath: m.sourceModel).lastPathComponent) }
        let label = device.isPhone ? "\(device.name) / \(runtime.name)" : "MobileSD iOS core on Linux / \(runtime.name)"
        return .object([
            "schema_version": .string(schemaVersion),
            "kind": "measurement",
            "created": .string(iso8601(created)),
            "label": .string(String(label.prefix(80))),
            "measured_by": ["kind": "app", "tool": .string(tool)],
            "device": .object(deviceJSON),
            "runtime": .object(runtimeJSON),
            "bundle": .object(bundleJSON),
            "settings": .object(settings),
            "protocol": ["warmup": .number(Double(result.warmup)), "repeats": .number(Double(result.repeats)),
                         "clock": "ContinuousClock (monotonic)",
                         "thermal": .string(device.isPhone ? "none: runs back to back" : "not applicable (desktop CPU)")],
            "stages": .object(stages),
            "steps": .array(timeline),
            "memory": ["peak_rss_bytes": .number(Double(DeviceInfo.peakResidentBytes())), "peak_accelerator_bytes": .null,
                       "note": "getrusage ru_maxrss of the whole process"],
            "target_s": 7,
            "notes": .string(notes.joined(separator: " ")),
        ])
    }

    /// Writes strict JSON atomically (no partial report on failure).
    public static func write(_ report: JSONValue, to url: URL) throws {
        try report.serialized(pretty: true).write(to: url, options: .atomic)
    }

    static func iso8601(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: date)
    }
}
