import COnnxRuntime
import Foundation
import MobileSD

/// ONNX Runtime through its C API: runs ONNX bundles (`mobilesd export --target onnx`). This is the runtime the
/// client core runs on Linux (against the same onnxruntime release the Python host uses), and it works on iOS
/// with the onnxruntime package too. One OrtEnv per runtime; one session per graph, on the CPU provider.
public final class OnnxRuntime: GraphRuntime {
    let api: UnsafePointer<OrtApi>
    let env: OpaquePointer
    let threads: Int?
    public let version: String

    public var name: String { "onnx" }
    public var delegate: String? { "CPUExecutionProvider" }
    public var accelerator: String { "cpu" }
    public var formats: Set<String> { ["onnx"] }

    /// `threads`: intra-op threads (nil: ONNX Runtime's default, as the Python host uses).
    public init(threads: Int? = nil) throws {
        guard let base = OrtGetApiBase() else {
            throw MobileSDError("ONNX Runtime returned no API base", fix: "check the onnxruntime library")
        }
        let libraryVersion = base.pointee.GetVersionString().map { String(cString: $0) } ?? "unknown"
        // the version of the headers compiled against (Debian's); the library is newer and serves older versions
        guard let api = base.pointee.GetApi(UInt32(ORT_API_VERSION)) else {
            throw MobileSDError("onnxruntime \(libraryVersion) does not provide C API version \(ORT_API_VERSION)",
                                fix: "link an onnxruntime at least as new as the headers")
        }
        self.api = api
        self.threads = threads
        self.version = "onnxruntime \(libraryVersion)"
        var env: OpaquePointer?
        if let status = api.pointee.CreateEnv(ORT_LOGGING_LEVEL_ERROR, "mobilesd-ios", &env) {
            throw Self.error(api, status, "creating the environment")
        }
        self.env = env!
    }

    deinit { api.pointee.ReleaseEnv(env) }

    static func error(_ api: UnsafePointer<OrtApi>, _ status: OpaquePointer, _ what: String) -> MobileSDError {
        let message = api.pointee.GetErrorMessage(status).map { String(cString: $0) } ?? "(no message)"
        api.pointee.ReleaseStatus(status)
        return MobileSDError("ONNX Runtime failed \(what): \(message)", fix: "check that the bundle's .onnx files are intact")
    }

    func check(_ status: OpaquePointer?, _ what: String) throws {
        if let status { throw Self.error(api, status, what) }
    }

    public func makeRunner(for graph: BundleManifest.Graph, in bundle: ModelBundle) throws -> GraphRunner {
        OnnxGraphRunner(runtime: self, graph: graph, path: try bundle.fileURL(graph.file).path)
    }
}

/// One graph's session. Inputs are read where they lie (tensors made over the Swift arrays' memory) and
/// outputs are written straight into buffers this runner keeps and hands out (copy-on-write: the next run
/// writes in place once the pipeline has let go of them), so a UNet chunk call copies no tensor.
final class OnnxGraphRunner: GraphRunner {
    let runtime: OnnxRuntime
    let graph: BundleManifest.Graph
    let path: String
    private var session: OpaquePointer?
    private var memoryInfo: OpaquePointer?
    private var fileInputs: [String] = []
    private var fileOutputs: [String] = []
    private var outputBuffers: [OutputBuffer] = []

    final class OutputBuffer {
        var values: [Float]
        init(count: Int) { values = [Float](repeating: 0, count: count) }
    }

    init(runtime: OnnxRuntime, graph: BundleManifest.Graph, path: String) {
        self.runtime = runtime
        self.graph = graph
        self.path = path
    }

    deinit { unload() }

    var isLoaded: Bool { session != nil }

    @discardableResult func load() throws -> LoadTiming {
        guard session == nil else { return LoadTiming() }
        let api = runtime.api.pointee
        let start = ContinuousClock.now
        var options: OpaquePointer?
        try runtime.check(api.CreateSessionOptions(&options), "creating session options")
        defer { api.ReleaseSessionOptions(options) }
        if let threads = runtime.threads {
            try runtime.check(api.SetIntraOpNumThreads(options, Int32(threads)), "setting the thread count")
        }
        try runtime.check(api.SetSessionLogSeverityLevel(options, 3), "setting the log level")
        var created: OpaquePointer?
        try runtime.check(api.CreateSession(runtime.env, path, options, &created), "loading \(graph.file)")
        session = created
        try runtime.check(api.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memoryInfo), "describing CPU memory")
        fileInputs = try names(input: true)
        fileOutputs = try names(input: false)
        guard fileOutputs.count == graph.outputs.count else {
            let n = fileOutputs.count
            unload()
            throw MobileSDError("\(graph.file) has \(n) outputs, the manifest lists \(graph.outputs.count)",
                                fix: "the bundle does not match its manifest; re-export it")
        }
        let known = Set(graph.inputs.map(\.name))
        if let unknown = fileInputs.first(where: { !known.contains($0) }) {
            unload()
            throw MobileSDError("\(graph.file) takes an input \(unknown) that the manifest does not list",
                                fix: "the bundle does not match its manifest; re-export it")
        }
        guard graph.outputs.allSatisfy({ $0.dtype == .float32 }) else {
            unload()
            throw MobileSDError("\(graph.file): this client reads float32 outputs only", fix: "re-export the bundle")
        }
        outputBuffers = graph.outputs.map { OutputBuffer(count: $0.shape.reduce(1, *)) }
        return LoadTiming(loadSeconds: (ContinuousClock.now - start).seconds)
    }

    private func names(input: Bool) throws -> [String] {
        let api = runtime.api.pointee
        var allocator: UnsafeMutablePointer<OrtAllocator>?
        try runtime.check(api.GetAllocatorWithDefaultOptions(&allocator), "getting the allocator")
        var count = 0
        try runtime.check(input ? api.SessionGetInputCount(session, &count) : api.SessionGetOutputCount(session, &count),
                          "reading \(graph.file)'s signature")
        return try (0..<count).map { i in
            var name: UnsafeMutablePointer<CChar>?
            try runtime.check(input ? api.SessionGetInputName(session, i, allocator, &name)
                                    : api.SessionGetOutputName(session, i, allocator, &name), "reading a tensor name")
            defer { _ = api.AllocatorFree(allocator, name) }
            return String(cString: name!)
        }
    }

    func unload() {
        let api = runtime.api.pointee
        if let session { api.ReleaseSession(session) }
        if let memoryInfo { api.ReleaseMemoryInfo(memoryInfo) }
        session = nil
        memoryInfo = nil
        outputBuffers = []
    }

    /// Calls `body` with the raw memory of every tensor (nested closures: each pointer is valid inside its own).
    private func withInputMemory<R>(_ tensors: ArraySlice<Tensor>, _ acc: [UnsafeRawBufferPointer],
                                    _ body: ([UnsafeRawBufferPointer]) throws -> R) rethrows -> R {
        guard let first = tensors.first else { return try body(acc) }
        switch first.storage {
        case .float32(let f): return try f.withUnsafeBytes { try withInputMemory(tensors.dropFirst(), acc + [$0], body) }
        case .int32(let i): return try i.withUnsafeBytes { try withInputMemory(tensors.dropFirst(), acc + [$0], body) }
        }
    }

    private func withOutputMemory<R>(_ index: Int, _ acc: [UnsafeMutableRawBufferPointer],
                                     _ body: ([UnsafeMutableRawBufferPointer]) throws -> R) rethrows -> R {
        guard index < outputBuffers.count else { return try body(acc) }
        return try outputBuffers[index].values.withUnsafeMutableBytes { try withOutputMemory(index + 1, acc + [$0], body) }
    }

    private func value(over memory: UnsafeRawBufferPointer, shape: [Int], dtype: Tensor.DType, name: String) throws -> OpaquePointer? {
        var dims = shape.map { Int64($0) }
        var value: OpaquePointer?
        let type = dtype == .float32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32
        // ORT only reads an input's memory; the C signature takes a mutable pointer for both directions
        try runtime.check(runtime.api.pointee.CreateTensorWithDataAsOrtValue(
            memoryInfo, UnsafeMutableRawPointer(mutating: memory.baseAddress!), memory.count, &dims, dims.count, type, &value),
            "binding tensor \(name)")
        return value
    }

    func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        guard let session else { throw MobileSDError("graph \(graph.name) is not loaded", fix: "this is a bug in the pipeline") }
        try checkInputs(inputs)
        let api = runtime.api.pointee
        // ONNX drops inputs a graph does not use: feed the ones the file takes, by name
        let feeds = fileInputs.map { inputs[$0]! }
        try withInputMemory(feeds[...], []) { inputMemory in
            try withOutputMemory(0, []) { outputMemory in
                var values: [OpaquePointer?] = []
                var outputs: [OpaquePointer?] = []
                defer { (values + outputs).forEach { if $0 != nil { api.ReleaseValue($0) } } }
                for (t, (name, memory)) in zip(feeds, zip(fileInputs, inputMemory)) {
                    values.append(try value(over: memory, shape: t.shape, dtype: t.dtype, name: name))
                }
                for (spec, memory) in zip(graph.outputs, outputMemory) {
                    outputs.append(try value(over: UnsafeRawBufferPointer(memory), shape: spec.shape, dtype: .float32, name: spec.name))
                }
                let inputNames = fileInputs.map { strdup($0) }, outputNames = fileOutputs.map { strdup($0) }
                defer { (inputNames + outputNames).forEach { free($0) } }
                let constInputNames: [UnsafePointer<CChar>?] = inputNames.map { $0.map { UnsafePointer($0) } }
                let constOutputNames: [UnsafePointer<CChar>?] = outputNames.map { $0.map { UnsafePointer($0) } }
                try runtime.check(api.Run(session, nil, constInputNames, values, values.count, constOutputNames,
                                          outputs.count, &outputs), "running \(graph.name)")
            }
        }
        var result: [String: Tensor] = [:]
        for (spec, buffer) in zip(graph.outputs, outputBuffers) {
            result[spec.name] = Tensor(shape: spec.shape, floats: buffer.values)
        }
        return result
    }
}
