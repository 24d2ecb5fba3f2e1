import Foundation

/// What this client reads from a bundle's manifest.json (format version 2, mobilesd/schemas/manifest.schema.json;
/// docs/manifest.md). Everything the pipeline needs comes from here: I/O names, shapes, scheduler, CFG mode,
/// chunk order, aliases. Keys the client does not need are kept in `raw`.
public struct BundleManifest: Sendable {
    public static let format = "mobilesd-bundle"
    public static let formatVersion = 2

    public struct TensorSpec: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let dtype: Tensor.DType
    }

    public struct Graph: Sendable {
        public let name: String
        public let role: String
        public let file: String
        public let format: String
        public let precision: String
        public let inputs: [TensorSpec]
        public let outputs: [TensorSpec]
        public let sha256: String
        public let sizeBytes: Int
        /// UNet chunks: after the call, the tensor named by the value is stored under the key too.
        public let aliases: [(alias: String, source: String)]
        /// The names of the outputs inside the graph file, by position (a chunk's `hidden` is `hidden_out` there).
        public let fileOutputNames: [String]
    }

    public struct Tokenizer: Sendable {
        public let vocab: String
        public let merges: String
        public let maxLength: Int
        public let bosId: Int
        public let eosId: Int
        public let padId: Int
        public let lowercase: Bool
    }

    public enum CFGMode: String, Sendable {
        /// one UNet call per step on the batch [unconditional, conditional]
        case batch
        /// two batch-1 calls per step
        case sequential
        /// one batch-1 call on the prompt, no guidance (distilled models)
        case none
    }

    public let bundleId: String
    public let target: String
    public let precision: String
    public let sourceModel: String
    public let predictionType: String
    /// LoRAs the exporter fused into the weights (`source.loras`, file name and scale): such a bundle runs like
    /// any other; the client only shows what it holds.
    public let fusedLoRAs: [(file: String, scale: Double)]
    public let imageHeight: Int
    public let imageWidth: Int
    public let latentShape: [Int]
    public let tokenizer: Tokenizer
    public let schedulerConfigPath: String
    public let defaultScheduler: SchedulerKind
    public let supportedSchedulers: [SchedulerKind]
    public let timestepSpacing: String?
    public let cfgMode: CFGMode
    public let unetBatch: Int
    public let defaultGuidance: Double
    public let negativePromptDefault: String
    public let unetChunks: [String]
    public let graphs: [Graph]
    /// Graphs with simulated activation quantization take the index of the nearest table timestep.
    public let stepIndexInput: (name: String, timesteps: [Double])?
    public let files: [String: (sha256: String, size: Int)]
    public let raw: JSONValue

    public func graph(named name: String) throws -> Graph {
        guard let g = graphs.first(where: { $0.name == name }) else {
            throw MobileSDError("manifest.json lists no graph named \(name)", fix: "re-export the bundle")
        }
        return g
    }

    public func graph(role: String) throws -> Graph {
        guard let g = graphs.first(where: { $0.role == role }) else {
            throw MobileSDError("manifest.json has no \(role) graph", fix: "re-export the bundle")
        }
        return g
    }

    public func unetGraphs() throws -> [Graph] { try unetChunks.map { try graph(named: $0) } }

    /// Reads and checks a manifest. Refuses another format or format version before reading anything else.
    public init(json: JSONValue) throws {
        let r = ManifestReader(root: json)
        guard json.object != nil else { throw MobileSDError("manifest.json is not a JSON object", fix: "re-export the bundle") }
        guard json["format"]?.string == Self.format else {
            throw MobileSDError("manifest.json is not a mobilesd bundle manifest (format is not \"\(Self.format)\")",
                                fix: "pass a folder written by `mobilesd export`")
        }
        let version = json["format_version"]?.int
        guard version == Self.formatVersion else {
            let found = version.map(String.init) ?? "(missing)"
            throw MobileSDError("bundle format version \(found) is not supported: this client reads version \(Self.formatVersion)",
                                fix: "re-export the bundle with a mobilesd that writes format version \(Self.formatVersion)")
        }
        raw = json
        bundleId = try r.string("bundle_id")
        target = try r.string("target")
        precision = try r.string("precision")
        sourceModel = try r.string("source.model")
        predictionType = try r.string("source.prediction_type")
        fusedLoRAs = (json["source"]?["loras"]?.array ?? []).map { lora in
            (URL(fileURLWithPath: lora["file"]?.string ?? "?").lastPathComponent, lora["scale"]?.double ?? 1)
        }
        imageHeight = try r.int("image.height")
        imageWidth = try r.int("image.width")
        latentShape = [try r.int("latent.channels"), try r.int("latent.height"), try r.int("latent.width")]
        tokenizer = Tokenizer(vocab: try r.string("tokenizer.vocab"), merges: try r.string("tokenizer.merges"),
                              maxLength: try r.int("tokenizer.max_length"), bosId: try r.int("tokenizer.bos_id"),
                              eosId: try r.int("tokenizer.eos_id"), padId: try r.int("tokenizer.pad_id"),
                              lowercase: try r.bool("tokenizer.lowercase"))
        schedulerConfigPath = try r.string("scheduler.config")
        defaultScheduler = try SchedulerKind.named(try r.string("scheduler.default"))
        supportedSchedulers = try r.array("scheduler.supported").map { v in
            guard let s = v.string else { throw r.bad("scheduler.supported", "a list of names") }
            return try SchedulerKind.named(s)
        }
        timestepSpacing = json["scheduler"]?["timestep_spacing"]?.string
        let mode = try r.string("cfg.mode")
        guard let cfgMode = CFGMode(rawValue: mode) else { throw r.bad("cfg.mode", "batch, sequential or none") }
        self.cfgMode = cfgMode
        unetBatch = try r.int("cfg.unet_batch")
        guard unetBatch == 1 || unetBatch == 2 else { throw r.bad("cfg.unet_batch", "1 or 2") }
        guard (cfgMode == .batch) == (unetBatch == 2) || cfgMode == .none else {
            throw MobileSDError("manifest.json: cfg.mode \(mode) does not fit cfg.unet_batch \(unetBatch)", fix: "re-export the bundle")
        }
        defaultGuidance = try r.double("cfg.default_guidance")
        negativePromptDefault = try r.string("cfg.negative_prompt_default")
        unetChunks = try r.array("unet.chunks").map { v in
            guard let s = v.string else { throw r.bad("unet.chunks", "a list of graph names") }
            return s
        }
        graphs = try r.array("graphs").enumerated().map { i, g in try Self.graph(g, at: "graphs[\(i)]") }
        if let q = json["quantization"], q["simulate_activations"]?.bool == true, let input = q["step_index"]?["input"]?.string {
            let ts = (q["timesteps"]?.array ?? []).compactMap(\.double)
            guard !ts.isEmpty else { throw r.bad("quantization.timesteps", "the activation tables' timesteps") }
            stepIndexInput = (input, ts)
        } else {
            stepIndexInput = nil
        }
        var files: [String: (sha256: String, size: Int)] = [:]
        for (path, info) in try r.object("files") {
            guard let sha = info["sha256"]?.string, let size = info["size"]?.int else {
                throw r.bad("files.\(path)", "{sha256, size}")
            }
            files[path] = (sha256: sha, size: size)
        }
        self.files = files
        for name in unetChunks { _ = try graph(named: name) }
        _ = try graph(role: "text_encoder")
        _ = try graph(role: "vae_decoder")
    }

    private static func graph(_ g: JSONValue, at path: String) throws -> Graph {
        let r = ManifestReader(root: g, prefix: path)
        func tensors(_ key: String) throws -> [TensorSpec] {
            try r.array(key).enumerated().map { i, t in
                let tr = ManifestReader(root: t, prefix: "\(path).\(key)[\(i)]")
                let dtypeName = try tr.string("dtype")
                guard let dtype = Tensor.DType(rawValue: dtypeName) else { throw tr.bad("dtype", "float32 or int32") }
                let shape = try tr.array("shape").map { v -> Int in
                    guard let n = v.int else { throw tr.bad("shape", "a list of integers") }
                    return n
                }
                return TensorSpec(name: try tr.string("name"), shape: shape, dtype: dtype)
            }
        }
        let outputs = try tensors("outputs")
        let aliases = (g["meta"]?["aliases"]?.object ?? [:]).sorted { $0.key < $1.key }.compactMap { k, v in
            v.string.map { (alias: k, source: $0) }
        }
        // file_output_names: a list by position, or an object {manifest name: file name}
        var fileNames = outputs.map(\.name)
        if let list = g["meta"]?["file_output_names"]?.array {
            let names = list.compactMap(\.string)
            guard names.count == outputs.count else { throw r.bad("meta.file_output_names", "one name per output") }
            fileNames = names
        } else if let map = g["meta"]?["file_output_names"]?.object {
            fileNames = outputs.map { map[$0.name]?.string ?? $0.name }
        }
        return Graph(name: try r.string("name"), role: try r.string("role"), file: try r.string("file"),
                     format: try r.string("format"), precision: try r.string("precision"),
                     inputs: try tensors("inputs"), outputs: outputs, sha256: try r.string("sha256"),
                     sizeBytes: try r.int("size_bytes"), aliases: aliases, fileOutputNames: fileNames)
    }
}

/// Typed access by dotted path, with errors that name the manifest key.
struct ManifestReader {
    let root: JSONValue
    var prefix = ""

    func bad(_ key: String, _ expected: String) -> MobileSDError {
        let full = prefix.isEmpty ? key : "\(prefix).\(key)"
        return MobileSDError("manifest.json: '\(full)' is missing or is not \(expected)",
                             fix: "re-export the bundle with this mobilesd (format version \(BundleManifest.formatVersion))")
    }

    func value(_ key: String) -> JSONValue? {
        var node: JSONValue? = root
        for part in key.split(separator: ".") { node = node?[String(part)] }
        return node
    }

    func string(_ key: String) throws -> String {
        guard let s = value(key)?.string else { throw bad(key, "a string") }
        return s
    }

    func int(_ key: String) throws -> Int {
        guard let i = value(key)?.int else { throw bad(key, "an integer") }
        return i
    }

    func double(_ key: String) throws -> Double {
        guard let d = value(key)?.double else { throw bad(key, "a number") }
        return d
    }

    func bool(_ key: String) throws -> Bool {
        guard let b = value(key)?.bool else { throw bad(key, "true or false") }
        return b
    }

    func array(_ key: String) throws -> [JSONValue] {
        guard let a = value(key)?.array else { throw bad(key, "a list") }
        return a
    }

    func object(_ key: String) throws -> [String: JSONValue] {
        guard let o = value(key)?.object else { throw bad(key, "an object") }
        return o
    }
}
