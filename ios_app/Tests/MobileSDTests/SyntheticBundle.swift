import Foundation
@testable import MobileSD

/// A small bundle folder written by the tests: a format-version-2 manifest that follows the repository's
/// manifest schema, the real CLIP tokenizer files (from the golden vectors), the SD scheduler config, and
/// placeholder graph files (the graphs run as SyntheticRuntime closures). Latent 4x8x8, text width 32.
enum SyntheticBundle {
    static let width = 32

    static func tensor(_ name: String, _ shape: [Int], _ dtype: String = "float32") -> JSONValue {
        ["name": .string(name), "shape": .array(shape.map { .number(Double($0)) }), "dtype": .string(dtype)]
    }

    static func graph(_ name: String, role: String, inputs: [JSONValue], outputs: [JSONValue],
                      aliases: [String: String]? = nil) -> [String: JSONValue] {
        var meta: [String: JSONValue] = ["file_output_names": .array(outputs.map { $0["name"]! })]
        if let aliases { meta["aliases"] = .object(aliases.mapValues { .string($0) }) }
        return ["name": .string(name), "role": .string(role), "file": .string("\(name).onnx"), "format": "onnx",
                "precision": "fp32", "inputs": .array(inputs), "outputs": .array(outputs), "meta": .object(meta),
                "verification": ["rel_l2": 0, "rel_l2_per_output": .object(Dictionary(uniqueKeysWithValues: outputs.map { ($0["name"]!.string!, JSONValue.number(0)) })),
                                 "max_abs": 0, "threshold": 1e-4, "passed": true, "runtime": "onnx"]]
    }

    /// Writes the bundle into a new temporary folder. `chunks`: 1 (one UNet graph) or 2 (a chunk pair that
    /// passes `hidden`, `temb` and an aliased skip tensor).
    static func write(unetBatch: Int = 2, chunks: Int = 1, cfgMode: String? = nil) throws -> URL {
        let g = try GoldenVectors.shared()
        let fm = FileManager.default
        let root = fm.temporaryDirectory.appendingPathComponent("mobilesd-synthetic-\(UUID().uuidString)")
        try fm.createDirectory(at: root.appendingPathComponent("tokenizer"), withIntermediateDirectories: true)
        try fm.createDirectory(at: root.appendingPathComponent("scheduler"), withIntermediateDirectories: true)
        for f in ["vocab.json", "merges.txt"] {
            try fm.copyItem(at: g.root.appendingPathComponent("tokenizer/\(f)"), to: root.appendingPathComponent("tokenizer/\(f)"))
        }
        let schedulerConfig = try g.section("schedulers")["configs"]!["sd_epsilon"]!
        try schedulerConfig.serialized().write(to: root.appendingPathComponent("scheduler/scheduler_config.json"))
        let b = unetBatch
        var graphs = [graph("text_encoder", role: "text_encoder", inputs: [tensor("input_ids", [1, 77], "int32")],
                            outputs: [tensor("last_hidden_state", [1, 77, width])])]
        let stepInputs = [tensor("sample", [b, 4, 8, 8]), tensor("timestep", [1]), tensor("encoder_hidden_states", [b, 77, width])]
        var chunkNames: [String] = []
        if chunks == 1 {
            graphs.append(graph("unet", role: "unet", inputs: stepInputs, outputs: [tensor("noise_pred", [b, 4, 8, 8])], aliases: [:]))
            chunkNames = ["unet"]
        } else {
            graphs.append(graph("unet_chunk0", role: "unet", inputs: stepInputs,
                                outputs: [tensor("hidden", [b, 4, 8, 8]), tensor("temb", [b, 4])], aliases: ["skip_0": "hidden"]))
            graphs.append(graph("unet_chunk1", role: "unet",
                                inputs: [tensor("hidden", [b, 4, 8, 8]), tensor("temb", [b, 4]), tensor("skip_0", [b, 4, 8, 8]),
                                         tensor("encoder_hidden_states", [b, 77, width])],
                                outputs: [tensor("noise_pred", [b, 4, 8, 8])], aliases: [:]))
            chunkNames = ["unet_chunk0", "unet_chunk1"]
        }
        graphs.append(graph("vae_decoder", role: "vae_decoder", inputs: [tensor("latent", [1, 4, 8, 8])],
                            outputs: [tensor("image", [1, 64, 64, 3])]))
        // placeholder graph files; their checksums go into the manifest like any file's
        var files: [String: JSONValue] = [:]
        for (i, gr) in graphs.enumerated() {
            let file = gr["file"]!.string!
            try Data("synthetic graph \(i)".utf8).write(to: root.appendingPathComponent(file))
        }
        for rel in ["tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"] + graphs.map({ $0["file"]!.string! }) {
            let url = root.appendingPathComponent(rel)
            let size = (try fm.attributesOfItem(atPath: url.path)[.size] as! NSNumber).intValue
            files[rel] = ["sha256": .string(try SHA256.hexDigest(ofFile: url, portable: true)), "size": .number(Double(size))]
        }
        for i in graphs.indices {
            let file = graphs[i]["file"]!.string!
            graphs[i]["sha256"] = files[file]!["sha256"]!
            graphs[i]["size_bytes"] = files[file]!["size"]!
        }
        let mode = cfgMode ?? (b == 2 ? "batch" : "sequential")
        let manifest: JSONValue = [
            "format": "mobilesd-bundle", "format_version": 2, "bundle_id": "onnx-0123456789abcdef",
            "mobilesd_version": "0.1.0", "created": "2026-01-01T00:00:00Z", "target": "onnx", "precision": "fp32",
            "source": ["model": "synthetic", "prediction_type": "epsilon"],
            "image": ["height": 64, "width": 64, "channels": 3, "layout": "NHWC", "range": [0, 1]],
            "latent": ["channels": 4, "height": 8, "width": 8, "scaling_factor": 0.18215, "vae_scale_factor": 8],
            "tokenizer": ["type": "clip_bpe", "dir": "tokenizer", "vocab": "tokenizer/vocab.json", "merges": "tokenizer/merges.txt",
                          "max_length": 77, "bos_id": 49406, "eos_id": 49407, "pad_id": 49407, "lowercase": true,
                          "padding": "max_length"],
            "scheduler": ["config": "scheduler/scheduler_config.json", "default": "dpm", "supported": ["dpm", "euler", "ddim", "lcm"],
                          "train_timesteps": 1000],
            "cfg": ["mode": .string(mode), "unet_batch": .number(Double(b)), "batch_order": ["unconditional", "conditional"],
                    "default_guidance": 7.5, "negative_prompt_default": ""],
            "unet": ["chunks": .array(chunkNames.map { .string($0) }), "timestep": ["shape": [1], "dtype": "float32"]],
            "graphs": .array(graphs.map { .object($0) }),
            "quantization": nil,
            "verification": ["graph_thresholds": ["fp32": 1e-4], "image_thresholds": ["fp32": 0.01], "gpu_thresholds": ["fp16": 0.01],
                             "end_to_end": ["mean_abs": 0, "max_abs": 0, "threshold": 0.01, "passed": true, "settings": [:],
                                            "runtime": "onnx"],
                             "passed": true],
            "files": .object(files),
        ]
        try manifest.serialized().write(to: root.appendingPathComponent("manifest.json"))
        return root
    }

    static func manifestJSON(_ root: URL) throws -> JSONValue {
        try JSONValue.parse(contentsOf: root.appendingPathComponent("manifest.json"))
    }

    static var manifestSchema: URL { GoldenVectors.repositoryRoot.appendingPathComponent("mobilesd/schemas/manifest.schema.json") }
    static var latencySchema: URL {
        GoldenVectors.repositoryRoot.appendingPathComponent("mobilesd/latency/latency_report.schema.json")
    }

    /// Deterministic stand-ins for the graphs: every UNet output depends on its batch item's sample and
    /// context, so CFG batching, chunk chaining and aliases change the result when they are wrong.
    static func graphs(_ graph: BundleManifest.Graph, _ inputs: [String: Tensor]) throws -> [String: Tensor] {
        func contextMeans(_ t: Tensor) -> [Float] {
            let b = t.shape[0], per = t.count / b
            return (0..<b).map { i in t.floats[(i * per)..<((i + 1) * per)].reduce(0, +) / Float(per) }
        }
        switch graph.name {
        case "text_encoder":
            let ids = inputs["input_ids"]!.ints
            let hidden = (0..<(77 * width)).map { j in Float(ids[j / width] % 97) * 0.01 + Float(j % width) * 0.001 }
            return ["last_hidden_state": Tensor(shape: [1, 77, width], floats: hidden)]
        case "unet", "unet_chunk0":
            let s = inputs["sample"]!, t = inputs["timestep"]!.floats[0]
            let means = contextMeans(inputs["encoder_hidden_states"]!)
            let per = s.count / s.shape[0]
            let hidden = s.floats.enumerated().map { i, v in 0.1 * v + means[i / per] * 0.05 }
            let tembValue: Float = t * 1e-4
            if graph.name == "unet" { return ["noise_pred": Tensor(shape: s.shape, floats: hidden.map { $0 + tembValue })] }
            let temb = [Float](repeating: tembValue, count: s.shape[0] * 4)
            return ["hidden": Tensor(shape: s.shape, floats: hidden), "temb": Tensor(shape: [s.shape[0], 4], floats: temb)]
        case "unet_chunk1":
            // noise_pred = hidden + temb[0]: equals the single graph's output; skip_0 must be the aliased hidden
            let h = inputs["hidden"]!, skip = inputs["skip_0"]!, temb = inputs["temb"]!.floats
            guard h.floats == skip.floats else { throw MobileSDError("skip_0 is not the aliased hidden") }
            return ["noise_pred": Tensor(shape: h.shape, floats: h.floats.map { $0 + temb[0] })]
        case "vae_decoder":
            let x = inputs["latent"]!.floats
            // pixel (y, x, c) from latent channel c at (y / 8, x / 8)
            let pixels = (0..<(64 * 64 * 3)).map { j -> Float in
                let p = j / 3, c = j % 3, row = p / 64, col = p % 64
                return 0.5 + 0.5 * tanh(x[c * 64 + (row / 8) * 8 + col / 8])
            }
            return ["image": Tensor(shape: [1, 64, 64, 3], floats: pixels)]
        default:
            throw MobileSDError("no synthetic graph \(graph.name)")
        }
    }
}
