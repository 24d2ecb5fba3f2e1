/// Loads and unloads the bundle's graphs. Normally everything is loaded once, before the first generation;
/// with `reduceMemory` each stage (text encoder, UNet chunks, decoder) is loaded right before it runs and
/// unloaded after, so only one stage's weights are resident: what lets SD 1.5 fit on 4-6 GB phones
/// (Apple's ml-stable-diffusion `reduceMemory`), at the price of a load per stage per image.
public final class ResourceManager {
    public enum Stage: String, CaseIterable, Sendable {
        case textEncoder = "text_encoder", unet, decoder = "vae_decoder"
    }

    public let reduceMemory: Bool
    private let runners: [Stage: [GraphRunner]]
    /// Compile and load time of every load so far (initial loads and, with reduceMemory, per-stage reloads).
    public private(set) var loadLog: [(graph: String, timing: LoadTiming)] = []

    public init(textEncoder: GraphRunner, unetChunks: [GraphRunner], decoder: GraphRunner, reduceMemory: Bool) {
        self.runners = [.textEncoder: [textEncoder], .unet: unetChunks, .decoder: [decoder]]
        self.reduceMemory = reduceMemory
    }

    public func runners(_ stage: Stage) -> [GraphRunner] { runners[stage] ?? [] }

    /// Loads every graph (normal mode) or none (reduceMemory: stages load when they run). Returns the time.
    @discardableResult public func loadResources() throws -> LoadTiming {
        guard !reduceMemory else { return LoadTiming() }
        var total = LoadTiming()
        for stage in Stage.allCases {
            for r in runners(stage) where !r.isLoaded { total = total + (try load(r)) }
        }
        return total
    }

    public func unloadResources() {
        for stage in Stage.allCases { runners(stage).forEach { $0.unload() } }
    }

    /// Load once and unload again, so first-launch work (Core ML's compile to .mlmodelc, Neural Engine
    /// specialization) is done before the first image (`prewarmResources` in Apple's pipeline).
    @discardableResult public func prewarmResources() throws -> LoadTiming {
        var total = LoadTiming()
        for stage in Stage.allCases {
            for r in runners(stage) {
                total = total + (try load(r))
                r.unload()
            }
        }
        return total
    }

    /// Runs `body` with `stage` loaded; with reduceMemory, unloads it afterwards.
    public func using<R>(_ stage: Stage, _ body: () throws -> R) throws -> R {
        for r in runners(stage) where !r.isLoaded { try load(r) }
        defer { if reduceMemory { runners(stage).forEach { $0.unload() } } }
        return try body()
    }

    @discardableResult private func load(_ r: GraphRunner) throws -> LoadTiming {
        let t = try r.load()
        loadLog.append((r.graph.name, t))
        return t
    }
}
