#if canImport(CoreML)
import CoreML
import Foundation

/// Core ML: runs a bundle's .mlpackage graphs with `MLModel` (documented API only). Each package is compiled
/// to .mlmodelc once (`MLModel.compileModel(at:)`) and the result kept in `cacheDirectory`, keyed by the
/// graph's SHA-256, so later launches skip the compile; `MLModelConfiguration.computeUnits` picks the Neural
/// Engine / GPU / CPU. Cannot be compiled or run on Linux: see ios_app/README.md for what a Mac must check.
public final class CoreMLRuntime: GraphRuntime {
    public let computeUnits: ComputeUnits
    public let cacheDirectory: URL

    public var name: String { "coreml" }
    public var version: String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        return "Core ML (OS \(v.majorVersion).\(v.minorVersion).\(v.patchVersion))"
    }
    public var delegate: String? { computeUnits.rawValue }
    public var accelerator: String { computeUnits.accelerator }
    public var formats: Set<String> { ["mlpackage"] }

    /// `cacheDirectory`: where compiled models are kept (default: Application Support/MobileSD/compiled).
    public init(computeUnits: ComputeUnits = .cpuAndNeuralEngine, cacheDirectory: URL? = nil) throws {
        self.computeUnits = computeUnits
        if let cacheDirectory {
            self.cacheDirectory = cacheDirectory
        } else {
            let support = try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask,
                                                      appropriateFor: nil, create: true)
            self.cacheDirectory = support.appendingPathComponent("MobileSD/compiled", isDirectory: true)
        }
    }

    public func makeRunner(for graph: BundleManifest.Graph, in bundle: ModelBundle) throws -> GraphRunner {
        let compiled = cacheDirectory.appendingPathComponent(bundle.manifest.bundleId, isDirectory: true)
            .appendingPathComponent("\(graph.name)-\(graph.sha256.prefix(16)).mlmodelc", isDirectory: true)
        return CoreMLGraphRunner(graph: graph, packageURL: try bundle.fileURL(graph.file), compiledURL: compiled,
                                 computeUnits: computeUnits)
    }
}

final class CoreMLGraphRunner: GraphRunner {
    let graph: BundleManifest.Graph
    let packageURL: URL
    let compiledURL: URL
    let computeUnits: ComputeUnits
    private var model: MLModel?

    init(graph: BundleManifest.Graph, packageURL: URL, compiledURL: URL, computeUnits: ComputeUnits) {
        self.graph = graph
        self.packageURL = packageURL
        self.compiledURL = compiledURL
        self.computeUnits = computeUnits
    }

    var isLoaded: Bool { model != nil }

    @discardableResult func load() throws -> LoadTiming {
        var timing = LoadTiming()
        let fm = FileManager.default
        if !fm.fileExists(atPath: compiledURL.path) {
            let start = ContinuousClock.now
            let temporary = try MLModel.compileModel(at: packageURL)
            try fm.createDirectory(at: compiledURL.deletingLastPathComponent(), withIntermediateDirectories: true)
            // the compiled model lands in a temporary folder: move it into the cache (Apple's documented pattern)
            let staging = compiledURL.deletingLastPathComponent()
                .appendingPathComponent(".\(compiledURL.lastPathComponent).partial", isDirectory: true)
            try? fm.removeItem(at: staging)
            try fm.moveItem(at: temporary, to: staging)
            try fm.moveItem(at: staging, to: compiledURL)
            timing.compileSeconds = (ContinuousClock.now - start).seconds
        }
        let configuration = MLModelConfiguration()
        switch computeUnits {
        case .cpuAndNeuralEngine: configuration.computeUnits = .cpuAndNeuralEngine
        case .cpuAndGPU: configuration.computeUnits = .cpuAndGPU
        case .all: configuration.computeUnits = .all
        case .cpuOnly: configuration.computeUnits = .cpuOnly
        }
        let start = ContinuousClock.now
        model = try MLModel(contentsOf: compiledURL, configuration: configuration)
        timing.loadSeconds = (ContinuousClock.now - start).seconds
        return timing
    }

    func unload() { model = nil }

    func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        guard let model else { throw MobileSDError("graph \(graph.name) is not loaded", fix: "this is a bug in the pipeline") }
        try checkInputs(inputs)
        var features: [String: MLFeatureValue] = [:]
        for spec in graph.inputs {
            let t = inputs[spec.name]!
            switch t.storage {
            case .float32(let f): features[spec.name] = MLFeatureValue(multiArray: MLMultiArray(MLShapedArray(scalars: f, shape: t.shape)))
            case .int32(let i): features[spec.name] = MLFeatureValue(multiArray: MLMultiArray(MLShapedArray(scalars: i, shape: t.shape)))
            }
        }
        return try autoreleasepool {
            let result = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: features))
            var out: [String: Tensor] = [:]
            for (spec, fileName) in zip(graph.outputs, graph.fileOutputNames) {
                guard let array = result.featureValue(for: fileName)?.multiArrayValue else {
                    throw MobileSDError("graph \(graph.name) returned no output \(fileName)", fix: "re-export the bundle")
                }
                // converting: copies out of Core ML's (possibly strided, possibly float16) buffer
                let shaped = MLShapedArray<Float>(converting: array)
                out[spec.name] = Tensor(shape: shaped.shape, floats: shaped.scalars)
            }
            return out
        }
    }
}
#endif
