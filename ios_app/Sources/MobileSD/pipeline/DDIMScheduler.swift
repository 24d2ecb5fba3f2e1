/// DDIM (eta 0: deterministic), following diffusers 0.42's DDIMScheduler: integer timesteps by
/// `timestep_spacing` (+ `steps_offset`), previous timestep t - train_timesteps // steps, the final
/// alpha_cumprod alphas_cumprod[0] unless `set_alpha_to_one`, optional clipping of the predicted x0.
public final class DDIMScheduler: Scheduler {
    public let kind = SchedulerKind.ddim
    public let timesteps: [Float]
    public var sigmas: [Float]? { nil }
    public let initNoiseSigma: Float = 1
    private let integerTimesteps: [Int]
    private let alphasCumprod: [Float]
    private let finalAlphaCumprod: Float
    private let config: SchedulerConfig
    private let stepRatio: Int

    init(config: SchedulerConfig, steps: Int) throws {
        self.config = config
        let n = config.numTrainTimesteps
        guard steps <= n else {
            throw MobileSDError("DDIM cannot run \(steps) steps: the model was trained with \(n) timesteps",
                                fix: "use at most \(n) steps")
        }
        let schedule = AlphasCumprodCalculation(config: config)
        alphasCumprod = schedule.alphasCumprod
        finalAlphaCumprod = config.setAlphaToOne ? 1 : alphasCumprod[0]
        var ts: [Int]
        switch config.timestepSpacing {
        case "linspace":
            ts = NumpySpacing.linspace(0, Double(n - 1), steps).map { Int(NumpySpacing.round($0)) }.reversed()
        case "leading":
            let ratio = n / steps
            ts = (0..<steps).reversed().map { $0 * ratio + config.stepsOffset }
        default:  // trailing
            let ratio = Double(n) / Double(steps)
            ts = NumpySpacing.arange(Double(n), 0, -ratio).map { Int(NumpySpacing.round($0)) - 1 }
        }
        guard !ts.isEmpty, ts.allSatisfy({ $0 >= 0 && $0 < n }) else {
            throw MobileSDError("DDIM cannot make \(steps) steps from this schedule", fix: "use fewer steps")
        }
        integerTimesteps = ts
        timesteps = ts.map { Float($0) }
        stepRatio = n / steps
    }

    public func step(modelOutput: [Float], stepIndex k: Int, sample: [Float], random: RandomSource) -> [Float] {
        let t = integerTimesteps[k]
        let prev = t - stepRatio
        let alphaProd = alphasCumprod[t]
        let alphaProdPrev = prev >= 0 ? alphasCumprod[prev] : finalAlphaCumprod
        let betaProd = 1 - alphaProd
        var x0 = predictedOriginalSample(config.predictionType, modelOutput: modelOutput, sample: sample,
                                         alphaProd: alphaProd, betaProd: betaProd)
        let sqrtAlpha = alphaProd.squareRoot(), sqrtBeta = betaProd.squareRoot()
        let epsilon: [Float]
        switch config.predictionType {
        case .epsilon: epsilon = modelOutput
        case .sample: epsilon = Elementwise.zip(sample, x0) { s, p in (s - sqrtAlpha * p) / sqrtBeta }
        case .vPrediction: epsilon = Elementwise.combine(sqrtAlpha, modelOutput, sqrtBeta, sample)
        }
        if config.clipSample {
            let r = Float(config.clipSampleRange)
            x0 = Elementwise.map(x0) { min(max($0, -r), r) }
        }
        // eta = 0: std_dev_t = 0, no noise
        let direction = (1 - alphaProdPrev - 0).squareRoot()
        return Elementwise.combine(alphaProdPrev.squareRoot(), x0, direction, epsilon)
    }
}
