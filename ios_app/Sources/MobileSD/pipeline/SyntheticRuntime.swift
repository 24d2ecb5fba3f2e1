/// A runtime whose graphs are Swift closures instead of model files: what the unit tests and the overhead
/// benchmark (benchmarks/ios_core_overhead.py) run the real pipeline on, so they check and measure the client
/// core itself. Without a body, runners hand back preallocated outputs of the manifest's shapes, as the ONNX
/// Runtime runner hands back the buffers the runtime wrote in place: no compute, no copies.
public final class SyntheticRuntime: GraphRuntime {
    public typealias Body = (BundleManifest.Graph, [String: Tensor]) throws -> [String: Tensor]
    public var name: String { "onnx" }
    public var version: String { "synthetic (no runtime)" }
    public var delegate: String? { nil }
    public var accelerator: String { "cpu" }
    public let formats: Set<String>
    private let body: Body?
    public private(set) var runners: [SyntheticGraphRunner] = []

    /// `body` computes each graph's outputs; nil: preallocated outputs (zeros of the manifest's shapes).
    public init(formats: Set<String> = ["onnx", "mlpackage", "tflite"], body: Body? = nil) {
        self.formats = formats
        self.body = body
    }

    public func makeRunner(for graph: BundleManifest.Graph, in bundle: ModelBundle) throws -> GraphRunner {
        let r = SyntheticGraphRunner(graph: graph, body: body)
        runners.append(r)
        return r
    }
}

public final class SyntheticGraphRunner: GraphRunner {
    public let graph: BundleManifest.Graph
    private let body: SyntheticRuntime.Body?
    private var outputs: [String: Tensor] = [:]
    public private(set) var isLoaded = false
    public private(set) var calls = 0
    public private(set) var loads = 0

    init(graph: BundleManifest.Graph, body: SyntheticRuntime.Body?) {
        self.graph = graph
        self.body = body
    }

    @discardableResult public func load() throws -> LoadTiming {
        isLoaded = true
        loads += 1
        if body == nil {
            for spec in graph.outputs {
                outputs[spec.name] = Tensor(shape: spec.shape, floats: [Float](repeating: 0, count: spec.shape.reduce(1, *)))
            }
        }
        return LoadTiming()
    }

    public func unload() {
        isLoaded = false
        outputs = [:]
    }

    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        guard isLoaded else { throw MobileSDError("synthetic graph \(graph.name) is not loaded") }
        try checkInputs(inputs)
        calls += 1
        if let body { return try body(graph, inputs) }
        // the buffers a zero-copy binding hands back (the ONNX Runtime runner's outputs are written in place)
        return outputs
    }
}
