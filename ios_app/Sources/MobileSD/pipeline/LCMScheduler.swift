/// Latent Consistency Model sampling, following diffusers 0.42's LCMScheduler: its own timesteps (every
/// k-th of `original_inference_steps` skipping steps), the boundary-condition scalings c_skip / c_out, and
/// fresh noise from the generation's generator every step but the last (the same generator as the initial
/// latent, as diffusers' pipelines pass it).
public final class LCMScheduler: Scheduler {
    public let kind = SchedulerKind.lcm
    public let timesteps: [Float]
    public var sigmas: [Float]? { nil }
    public let initNoiseSigma: Float = 1
    private let integerTimesteps: [Int]
    private let alphasCumprod: [Float]
    private let finalAlphaCumprod: Float
    private let config: SchedulerConfig

    init(config: SchedulerConfig, steps: Int) throws {
        self.config = config
        let n = config.numTrainTimesteps, original = config.originalInferenceSteps
        guard original <= n else {
            throw MobileSDError("LCM original_inference_steps \(original) exceeds the \(n) training timesteps",
                                fix: "fix the scheduler config")
        }
        guard steps <= original else {
            throw MobileSDError("LCM cannot run \(steps) steps: its schedule has original_inference_steps = \(original)",
                                fix: "use at most \(original) steps")
        }
        let schedule = AlphasCumprodCalculation(config: config)
        alphasCumprod = schedule.alphasCumprod
        finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
        let k = n / original
        let origin = (1...original).map { $0 * k - 1 }.reversed() as [Int]
        // np.linspace(0, len, num=steps, endpoint=False), floored
        let indices = (0..<steps).map { i in Int((Double(i) * (Double(origin.count) / Double(steps))).rounded(.down)) }
        integerTimesteps = indices.map { origin[$0] }
        timesteps = integerTimesteps.map { Float($0) }
    }

    public func step(modelOutput: [Float], stepIndex k: Int, sample: [Float], random: RandomSource) -> [Float] {
        let t = integerTimesteps[k]
        let prev = k + 1 < integerTimesteps.count ? integerTimesteps[k + 1] : t
        let alphaProd = alphasCumprod[t]
        let alphaProdPrev = prev >= 0 ? alphasCumprod[prev] : finalAlphaCumprod
        let betaProd = 1 - alphaProd, betaProdPrev = 1 - alphaProdPrev
        // get_scalings_for_boundary_condition_discrete (sigma_data 0.5), float32 like the 0-d tensors
        let scaled = Float(t) * Float(config.timestepScaling)
        let cSkip = 0.25 / (scaled * scaled + 0.25)
        let cOut = scaled / (scaled * scaled + 0.25).squareRoot()
        var x0 = predictedOriginalSample(config.predictionType, modelOutput: modelOutput, sample: sample,
                                         alphaProd: alphaProd, betaProd: betaProd)
        if config.clipSample {
            let r = Float(config.clipSampleRange)
            x0 = Elementwise.map(x0) { min(max($0, -r), r) }
        }
        let denoised = Elementwise.combine(cOut, x0, cSkip, sample)
        guard k != integerTimesteps.count - 1 else { return denoised }
        let noise = random.normal(count: sample.count)
        return Elementwise.combine(alphaProdPrev.squareRoot(), denoised, betaProdPrev.squareRoot(), noise)
    }
}
