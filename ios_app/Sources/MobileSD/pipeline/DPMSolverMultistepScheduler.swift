import Foundation

/// DPM-Solver++ multistep (orders 1-3, midpoint or heun), following diffusers 0.42's
/// DPMSolverMultistepScheduler: timesteps by `timestep_spacing` (+ `steps_offset`), sigmas from the training
/// schedule, `lower_order_final` below 15 steps, final sigma zero or sigma_min. Scalars are float32 as in the
/// 0-d tensors diffusers computes them with; the latent update is elementwise float32.
public final class DPMSolverMultistepScheduler: Scheduler {
    public let kind = SchedulerKind.dpm
    public let timesteps: [Float]
    private let sigmaTable: [Float]
    public var sigmas: [Float]? { sigmaTable }
    public let initNoiseSigma: Float = 1
    private let config: SchedulerConfig
    private var modelOutputs: [[Float]?]
    private var lowerOrderNums = 0

    init(config: SchedulerConfig, steps: Int) throws {
        self.config = config
        let schedule = AlphasCumprodCalculation(config: config, zeroSNRTerminal: true)
        let n = config.numTrainTimesteps
        // lambda_min_clipped: how many of the smallest log-SNRs (flipped lambda_t) lie below the clip
        let lambdas = schedule.alphasCumprod.map { ac -> Float in
            let alpha = ac.squareRoot(), sigma = (1 - ac).squareRoot()
            return Foundation.log(alpha) - Foundation.log(sigma)
        }
        let clippedIndex = lambdas.reversed().filter { Double($0) < config.lambdaMinClipped }.count
        let lastTimestep = n - clippedIndex
        var ts: [Int]
        switch config.timestepSpacing {
        case "linspace":
            ts = NumpySpacing.linspace(0, Double(lastTimestep - 1), steps + 1).map { Int(NumpySpacing.round($0)) }
            ts = Array(ts.reversed().dropLast())
        case "leading":
            let ratio = lastTimestep / (steps + 1)
            ts = (0...steps).map { $0 * ratio }.reversed().dropLast().map { $0 + config.stepsOffset }
        default:  // trailing
            let ratio = Double(n) / Double(steps)
            ts = NumpySpacing.arange(Double(lastTimestep), 0, -ratio).map { Int(NumpySpacing.round($0)) - 1 }
        }
        guard !ts.isEmpty, ts.allSatisfy({ $0 >= 0 && $0 < n }) else {
            throw MobileSDError("DPM-Solver cannot make \(steps) steps from this schedule (\(n) training timesteps)",
                                fix: "use fewer steps")
        }
        timesteps = ts.map { Float($0) }
        let table = schedule.sigmas
        let last: Float = config.finalSigmasType == "sigma_min" ? table[0] : 0
        sigmaTable = ts.map { table[$0] } + [last]
        modelOutputs = Array(repeating: nil, count: config.solverOrder)
    }

    /// (alpha_t, sigma_t) of a sigma, as `_sigma_to_alpha_sigma_t`.
    private func alphaSigma(_ sigma: Float) -> (Float, Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    private func lambda(_ alpha: Float, _ sigma: Float) -> Float { Foundation.log(alpha) - Foundation.log(sigma) }

    public func step(modelOutput: [Float], stepIndex k: Int, sample: [Float], random: RandomSource) -> [Float] {
        let n = timesteps.count
        let lowerOrderFinal = k == n - 1
            && (config.eulerAtFinal || (config.lowerOrderFinal && n < 15) || config.finalSigmasType == "zero")
        let lowerOrderSecond = k == n - 2 && config.lowerOrderFinal && n < 15

        // convert_model_output: the data prediction x0 (dpmsolver++)
        let (alphaS0, sigmaS0) = alphaSigma(sigmaTable[k])
        let x0: [Float]
        switch config.predictionType {
        case .epsilon: x0 = Elementwise.zip(sample, modelOutput) { s, m in (s - sigmaS0 * m) / alphaS0 }
        case .sample: x0 = modelOutput
        case .vPrediction: x0 = Elementwise.difference(alphaS0, sample, sigmaS0, modelOutput)
        }
        for i in 0..<(config.solverOrder - 1) { modelOutputs[i] = modelOutputs[i + 1] }
        modelOutputs[config.solverOrder - 1] = x0

        let out: [Float]
        if config.solverOrder == 1 || lowerOrderNums < 1 || lowerOrderFinal {
            out = firstOrder(x0, k: k, sample: sample)
        } else if config.solverOrder == 2 || lowerOrderNums < 2 || lowerOrderSecond {
            out = secondOrder(k: k, sample: sample)
        } else {
            out = thirdOrder(k: k, sample: sample)
        }
        if lowerOrderNums < config.solverOrder { lowerOrderNums += 1 }
        return out
    }

    private func firstOrder(_ m: [Float], k: Int, sample: [Float]) -> [Float] {
        let (alphaT, sigmaT) = alphaSigma(sigmaTable[k + 1])
        let (alphaS, sigmaS) = alphaSigma(sigmaTable[k])
        let h = lambda(alphaT, sigmaT) - lambda(alphaS, sigmaS)
        return Elementwise.difference(sigmaT / sigmaS, sample, alphaT * (Foundation.exp(-h) - 1), m)
    }

    private func secondOrder(k: Int, sample: [Float]) -> [Float] {
        let (alphaT, sigmaT) = alphaSigma(sigmaTable[k + 1])
        let (alphaS0, sigmaS0) = alphaSigma(sigmaTable[k])
        let (alphaS1, sigmaS1) = alphaSigma(sigmaTable[k - 1])
        let lambdaT = lambda(alphaT, sigmaT), lambdaS0 = lambda(alphaS0, sigmaS0), lambdaS1 = lambda(alphaS1, sigmaS1)
        let m0 = modelOutputs[config.solverOrder - 1]!, m1 = modelOutputs[config.solverOrder - 2]!
        let h = lambdaT - lambdaS0, h0 = lambdaS0 - lambdaS1
        let r0 = h0 / h
        let d1Scale = 1 / r0
        let c0 = sigmaT / sigmaS0
        let c1 = alphaT * (Foundation.exp(-h) - 1)
        var out = [Float](repeating: 0, count: sample.count)
        if config.solverType == "midpoint" {
            let c2 = 0.5 * c1
            for i in 0..<sample.count {
                let d1 = d1Scale * (m0[i] - m1[i])
                out[i] = c0 * sample[i] - c1 * m0[i] - c2 * d1
            }
        } else {  // heun
            let c2 = alphaT * ((Foundation.exp(-h) - 1) / h + 1)
            for i in 0..<sample.count {
                let d1 = d1Scale * (m0[i] - m1[i])
                out[i] = c0 * sample[i] - c1 * m0[i] + c2 * d1
            }
        }
        return out
    }

    private func thirdOrder(k: Int, sample: [Float]) -> [Float] {
        let (alphaT, sigmaT) = alphaSigma(sigmaTable[k + 1])
        let (alphaS0, sigmaS0) = alphaSigma(sigmaTable[k])
        let (alphaS1, sigmaS1) = alphaSigma(sigmaTable[k - 1])
        let (alphaS2, sigmaS2) = alphaSigma(sigmaTable[k - 2])
        let lambdaT = lambda(alphaT, sigmaT), lambdaS0 = lambda(alphaS0, sigmaS0)
        let lambdaS1 = lambda(alphaS1, sigmaS1), lambdaS2 = lambda(alphaS2, sigmaS2)
        let m0 = modelOutputs[2]!, m1 = modelOutputs[1]!, m2 = modelOutputs[0]!
        let h = lambdaT - lambdaS0, h0 = lambdaS0 - lambdaS1, h1 = lambdaS1 - lambdaS2
        let r0 = h0 / h, r1 = h1 / h
        let e = Foundation.exp(-h) - 1
        let c0 = sigmaT / sigmaS0, c1 = alphaT * e, c2 = alphaT * (e / h + 1), c3 = alphaT * ((e + h) / (h * h) - 0.5)
        let inv0 = 1 / r0, inv1 = 1 / r1, w = r0 / (r0 + r1), inv01 = 1 / (r0 + r1)
        var out = [Float](repeating: 0, count: sample.count)
        for i in 0..<sample.count {
            let d10 = inv0 * (m0[i] - m1[i]), d11 = inv1 * (m1[i] - m2[i])
            let d1 = d10 + w * (d10 - d11)
            let d2 = inv01 * (d10 - d11)
            out[i] = c0 * sample[i] - c1 * m0[i] + c2 * d1 - c3 * d2
        }
        return out
    }
}
