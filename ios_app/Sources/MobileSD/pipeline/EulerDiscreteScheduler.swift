/// Euler (Karras et al. 2022, algorithm 2, s_churn 0), following diffusers 0.42's EulerDiscreteScheduler:
/// float32 timesteps by `timestep_spacing`, sigmas interpolated linearly from the training schedule,
/// init_noise_sigma sqrt(sigma_max^2 + 1) for leading spacing (sigma_max otherwise), model input divided by
/// sqrt(sigma^2 + 1). At s_churn 0 diffusers draws no noise that matters, so none is drawn here.
public final class EulerDiscreteScheduler: Scheduler {
    public let kind = SchedulerKind.euler
    public let timesteps: [Float]
    private let sigmaTable: [Float]
    public var sigmas: [Float]? { sigmaTable }
    public let initNoiseSigma: Float
    private let config: SchedulerConfig

    init(config: SchedulerConfig, steps: Int) throws {
        self.config = config
        let schedule = AlphasCumprodCalculation(config: config, zeroSNRTerminal: true)
        let n = config.numTrainTimesteps
        var ts: [Float]
        switch config.timestepSpacing {
        case "linspace":
            ts = NumpySpacing.linspace(0, Double(n - 1), steps).reversed().map { Float($0) }
        case "leading":
            let ratio = n / steps
            ts = (0..<steps).reversed().map { Float($0 * ratio) + Float(config.stepsOffset) }
        default:  // trailing
            let ratio = Double(n) / Double(steps)
            ts = NumpySpacing.arange(Double(n), 0, -ratio).map { Float(NumpySpacing.round($0)) - 1 }
        }
        guard !ts.isEmpty, ts.allSatisfy({ $0 >= 0 && $0 <= Float(n - 1) }) else {
            throw MobileSDError("Euler cannot make \(steps) steps from this schedule (\(n) training timesteps)",
                                fix: "use fewer steps")
        }
        timesteps = ts
        let table = schedule.sigmas
        let last: Float = config.finalSigmasType == "sigma_min" ? table[0] : 0
        sigmaTable = ts.map { Float(NumpySpacing.interp(Double($0), table)) } + [last]
        let maxSigma = sigmaTable.max() ?? 0
        initNoiseSigma = ["linspace", "trailing"].contains(config.timestepSpacing)
            ? maxSigma : (maxSigma * maxSigma + 1).squareRoot()
    }

    public func scaleModelInput(_ sample: [Float], stepIndex k: Int) -> [Float] {
        let sigma = sigmaTable[k]
        let scale = (sigma * sigma + 1).squareRoot()
        return Elementwise.map(sample) { $0 / scale }
    }

    public func step(modelOutput: [Float], stepIndex k: Int, sample: [Float], random: RandomSource) -> [Float] {
        let sigma = sigmaTable[k]
        let sigmaHat = sigma * (0 + 1)   // gamma = 0 at s_churn 0
        let x0: [Float]
        switch config.predictionType {
        case .epsilon: x0 = Elementwise.zip(sample, modelOutput) { s, m in s - sigmaHat * m }
        case .sample: x0 = modelOutput
        case .vPrediction:
            let c = -sigma / (sigma * sigma + 1).squareRoot(), d = sigma * sigma + 1
            x0 = Elementwise.zip(sample, modelOutput) { s, m in m * c + s / d }
        }
        let dt = sigmaTable[k + 1] - sigmaHat
        var out = [Float](repeating: 0, count: sample.count)
        for i in 0..<sample.count {
            let derivative = (sample[i] - x0[i]) / sigmaHat
            out[i] = sample[i] + derivative * dt
        }
        return out
    }
}
