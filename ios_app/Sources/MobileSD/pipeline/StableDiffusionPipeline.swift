import Foundation

/// The generation loop an app runs on a bundle (docs/manifest.md, "The loop an app runs"; the reference is
/// mobilesd/pipeline.py HostPipeline.generate): tokenize negative + prompt, the text encoder twice,
/// x = randn(seed) * init_noise_sigma, then per step scale_model_input, the UNet (one call on
/// [uncond, cond] for unet_batch 2, two calls for 1, one on the prompt without guidance), CFG
/// uncond + g * (cond - uncond), the scheduler step (the generator continues for LCM), and the decoder.
public final class StableDiffusionPipeline {
    public let bundle: ModelBundle
    public let runtime: GraphRuntime
    public let resources: ResourceManager
    let textEncoder: TextEncoder
    let unet: Unet
    let decoder: Decoder
    let schedulerConfig: [String: JSONValue]

    /// Opens the graphs through `runtime` (nothing is loaded yet: call `loadResources`).
    public convenience init(bundle: ModelBundle, runtime: GraphRuntime, reduceMemory: Bool = false) throws {
        let m = bundle.manifest
        for g in m.graphs where !runtime.formats.contains(g.format) {
            throw MobileSDError("graph \(g.name) is \(g.format); the \(runtime.name) runtime runs \(runtime.formats.sorted().joined(separator: ", "))",
                                fix: "export the bundle with the matching --target (ios: Core ML, onnx: ONNX Runtime)")
        }
        let te = try runtime.makeRunner(for: try m.graph(role: "text_encoder"), in: bundle)
        let chunks = try m.unetGraphs().map { try runtime.makeRunner(for: $0, in: bundle) }
        let dec = try runtime.makeRunner(for: try m.graph(role: "vae_decoder"), in: bundle)
        try self.init(bundle: bundle, runtime: runtime, textEncoder: te, unetChunks: chunks, decoder: dec,
                      reduceMemory: reduceMemory)
    }

    /// With runners made elsewhere (tests and benchmarks pass synthetic ones).
    public init(bundle: ModelBundle, runtime: GraphRuntime, textEncoder: GraphRunner, unetChunks: [GraphRunner],
                decoder: GraphRunner, reduceMemory: Bool = false) throws {
        self.bundle = bundle
        self.runtime = runtime
        self.resources = ResourceManager(textEncoder: textEncoder, unetChunks: unetChunks, decoder: decoder,
                                         reduceMemory: reduceMemory)
        self.textEncoder = TextEncoder(tokenizer: try bundle.makeTokenizer(), runner: textEncoder)
        self.unet = Unet(chunks: unetChunks, stepIndexInput: bundle.manifest.stepIndexInput)
        self.decoder = Decoder(runner: decoder)
        self.schedulerConfig = try bundle.schedulerConfig()
    }

    @discardableResult public func loadResources() throws -> LoadTiming { try resources.loadResources() }
    public func unloadResources() { resources.unloadResources() }

    /// The scheduler a configuration runs with (checked against the manifest's `scheduler.supported`).
    public func makeScheduler(_ config: GenerationConfiguration) throws -> Scheduler {
        let m = bundle.manifest
        let kind = config.scheduler ?? m.defaultScheduler
        guard m.supportedSchedulers.contains(kind) else {
            throw MobileSDError("this bundle does not support the \(kind.rawValue) scheduler",
                                fix: "use one of \(m.supportedSchedulers.map(\.rawValue).joined(separator: ", "))")
        }
        return try SchedulerFactory.make(kind, config: schedulerConfig, steps: config.steps,
                                         timestepSpacing: m.timestepSpacing)
    }

    /// Whether a configuration runs classifier-free guidance (the host's rule: guidance > 1, and not for
    /// bundles of distilled models whose cfg.mode is none).
    public func usesGuidance(_ config: GenerationConfiguration) -> Bool {
        bundle.manifest.cfgMode != .none && (config.guidance ?? bundle.manifest.defaultGuidance) > 1
    }

    /// One image. `progress(step, steps)` is called after each step; return false to cancel.
    public func generateImage(_ config: GenerationConfiguration, times: inout StageTimes,
                              progress: ((Int, Int) -> Bool)? = nil) throws -> RawImage {
        let m = bundle.manifest
        let scheduler = try makeScheduler(config)
        let guidance = Float(config.guidance ?? m.defaultGuidance)
        let cfg = usesGuidance(config)
        let negative = config.negativePrompt ?? m.negativePromptDefault
        let loadsBefore = resources.loadLog.count
        let start = ContinuousClock.now

        let (uncond, cond) = try resources.using(.textEncoder) {
            (try textEncoder.encode(negative), try textEncoder.encode(config.prompt))
        }
        times.textEncoder = (ContinuousClock.now - start).seconds

        let random = TorchRandomSource(seed: config.seed)
        let shape = [1] + m.latentShape
        var x = Elementwise.map(random.normal(shape: shape)) { $0 * scheduler.initNoiseSigma }
        let batchContext = m.unetBatch == 2 ? Tensor.concatenatingBatch(cfg ? [uncond, cond] : [cond, cond]) : nil

        try resources.using(.unet) {
            for (k, t) in scheduler.timesteps.enumerated() {
                let stepStart = ContinuousClock.now
                var chunkTimes = [Double](repeating: 0, count: unet.chunks.count)
                let onChunk: (Int, Double) -> Void = { i, s in chunkTimes[i] += s }
                let scaled = Tensor(shape: shape, floats: scheduler.scaleModelInput(x, stepIndex: k))
                let guided: [Float]
                if cfg {
                    let predU: [Float], predC: [Float]
                    if m.unetBatch == 2 {
                        let pred = try unet.predictNoise(sample: Tensor.concatenatingBatch([scaled, scaled]), timestep: t,
                                                         context: batchContext!, onChunk: onChunk)
                        predU = pred.batchItem(0).floats
                        predC = pred.batchItem(1).floats
                    } else {
                        predU = try unet.predictNoise(sample: scaled, timestep: t, context: uncond, onChunk: onChunk).floats
                        predC = try unet.predictNoise(sample: scaled, timestep: t, context: cond, onChunk: onChunk).floats
                    }
                    guided = Elementwise.zip(predU, predC) { u, c in u + guidance * (c - u) }
                } else if m.unetBatch == 2 {
                    // a batch-2 graph without guidance: the conditional half twice, the first result kept
                    guided = try unet.predictNoise(sample: Tensor.concatenatingBatch([scaled, scaled]), timestep: t,
                                                   context: batchContext!, onChunk: onChunk).batchItem(0).floats
                } else {
                    guided = try unet.predictNoise(sample: scaled, timestep: t, context: cond, onChunk: onChunk).floats
                }
                x = scheduler.step(modelOutput: guided, stepIndex: k, sample: x, random: random)
                let stepSeconds = (ContinuousClock.now - stepStart).seconds
                times.steps.append(stepSeconds)
                times.stepChunks.append(chunkTimes)
                times.stepOverhead.append(max(0, stepSeconds - chunkTimes.reduce(0, +)))
                if let progress, !progress(k + 1, scheduler.timesteps.count) {
                    throw CancellationError()
                }
            }
        }

        let decodeStart = ContinuousClock.now
        let image = try resources.using(.decoder) { try decoder.decode(Tensor(shape: shape, floats: x)) }
        times.decoder = (ContinuousClock.now - decodeStart).seconds
        times.endToEnd = (ContinuousClock.now - start).seconds
        times.loads = resources.loadLog.dropFirst(loadsBefore).reduce(LoadTiming()) { $0 + $1.timing }
        return image
    }
}
