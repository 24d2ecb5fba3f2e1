/// One graph of a bundle on some runtime (Core ML, ONNX Runtime, or a synthetic one in tests and benchmarks).
///
/// Inputs are looked up by the manifest's names; outputs come back under the manifest's names (a runner maps
/// the file's own output names, `meta.file_output_names`, by position). `load` and `unload` let the
/// ResourceManager keep one stage resident at a time.
public protocol GraphRunner: AnyObject {
    var graph: BundleManifest.Graph { get }
    var isLoaded: Bool { get }
    /// Makes the graph ready to run; returns the time spent compiling (first load) and loading.
    @discardableResult func load() throws -> LoadTiming
    func unload()
    func run(_ inputs: [String: Tensor]) throws -> [String: Tensor]
}

/// Where load time goes. Core ML compiles a .mlpackage to .mlmodelc on the first launch (cached after), then
/// loads it (the first load on a device also specializes it for the Neural Engine, inside MLModel's init);
/// ONNX Runtime only loads.
public struct LoadTiming: Sendable {
    public var compileSeconds: Double
    public var loadSeconds: Double

    public init(compileSeconds: Double = 0, loadSeconds: Double = 0) {
        self.compileSeconds = compileSeconds
        self.loadSeconds = loadSeconds
    }

    public static func + (a: LoadTiming, b: LoadTiming) -> LoadTiming {
        LoadTiming(compileSeconds: a.compileSeconds + b.compileSeconds, loadSeconds: a.loadSeconds + b.loadSeconds)
    }
}

/// A runtime that makes GraphRunners for a bundle's graphs, and says what it is for latency reports.
public protocol GraphRuntime: AnyObject {
    /// latency-report runtime name: "onnx", "coreml", ...
    var name: String { get }
    var version: String { get }
    /// execution provider / compute units, e.g. "CPUExecutionProvider", "cpuAndNeuralEngine"
    var delegate: String? { get }
    /// latency-report accelerator: "cpu", "gpu", "ane"
    var accelerator: String { get }
    /// The graph file formats it runs ("onnx", "mlpackage").
    var formats: Set<String> { get }
    func makeRunner(for graph: BundleManifest.Graph, in bundle: ModelBundle) throws -> GraphRunner
}

extension GraphRunner {
    /// Checks a run's inputs against the manifest's specs before handing them to the runtime.
    public func checkInputs(_ inputs: [String: Tensor]) throws {
        for spec in graph.inputs {
            guard let t = inputs[spec.name] else {
                throw MobileSDError("graph \(graph.name): input \(spec.name) was not given", fix: "this is a bug in the pipeline")
            }
            guard t.shape == spec.shape, t.dtype == spec.dtype else {
                throw MobileSDError("graph \(graph.name): input \(spec.name) is \(t.dtype.rawValue) \(t.shape), "
                                    + "the manifest says \(spec.dtype.rawValue) \(spec.shape)",
                                    fix: "re-export the bundle for this setting (e.g. --unet-batch)")
            }
        }
    }
}
