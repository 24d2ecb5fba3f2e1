/// A denoising scheduler: the timesteps of a run and the update from one latent to the next.
///
/// One instance serves one generation (DPM-Solver keeps the previous model outputs). `stepIndex` is the
/// position in `timesteps`; a generation calls `scaleModelInput` then `step` once per timestep, in order.
/// Latents are flat float32 arrays (C order) of any shape: the update is elementwise.
public protocol Scheduler: AnyObject {
    var kind: SchedulerKind { get }
    /// The timesteps in the order they run, as the UNet receives them (float32).
    var timesteps: [Float] { get }
    /// Noise levels (Euler, DPM-Solver; the last is the final one), nil for DDIM and LCM.
    var sigmas: [Float]? { get }
    /// Standard deviation of the initial noise: the latent starts as randn * initNoiseSigma.
    var initNoiseSigma: Float { get }
    /// What the UNet is fed at this step (Euler divides by sqrt(sigma^2 + 1); the others pass it through).
    func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float]
    /// The next latent from the (guided) model output. `random` is the generation's generator (LCM draws
    /// fresh noise from it every step but the last).
    func step(modelOutput: [Float], stepIndex: Int, sample: [Float], random: RandomSource) -> [Float]
}

extension Scheduler {
    public func scaleModelInput(_ sample: [Float], stepIndex: Int) -> [Float] { sample }
}

/// Makes the scheduler `kind` for a bundle's raw diffusers config.
public enum SchedulerFactory {
    public static func make(_ kind: SchedulerKind, config raw: [String: JSONValue], steps: Int,
                            timestepSpacing: String? = nil) throws -> Scheduler {
        guard steps >= 1 else {
            throw MobileSDError("--steps must be at least 1 (got \(steps))", fix: "pass --steps 20, for example")
        }
        let config = try SchedulerConfig.resolve(raw, for: kind, timestepSpacing: timestepSpacing)
        switch kind {
        case .dpm: return try DPMSolverMultistepScheduler(config: config, steps: steps)
        case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
        case .ddim: return try DDIMScheduler(config: config, steps: steps)
        case .lcm: return try LCMScheduler(config: config, steps: steps)
        }
    }
}

/// Elementwise float32 arithmetic in the order torch evaluates the schedulers' expressions: every operation
/// rounds on its own (eager torch does not fuse), so the results match the host within the last bits.
enum Elementwise {
    /// a * x + b * y
    @inline(__always)
    static func combine(_ a: Float, _ x: [Float], _ b: Float, _ y: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                out.withUnsafeMutableBufferPointer { op in
                    for i in 0..<xp.count { op[i] = a * xp[i] + b * yp[i] }
                }
            }
        }
        return out
    }

    /// a * x - b * y
    @inline(__always)
    static func difference(_ a: Float, _ x: [Float], _ b: Float, _ y: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                out.withUnsafeMutableBufferPointer { op in
                    for i in 0..<xp.count { op[i] = a * xp[i] - b * yp[i] }
                }
            }
        }
        return out
    }

    static func map(_ x: [Float], _ f: (Float) -> Float) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op in
                for i in 0..<xp.count { op[i] = f(xp[i]) }
            }
        }
        return out
    }

    static func zip(_ x: [Float], _ y: [Float], _ f: (Float, Float) -> Float) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                out.withUnsafeMutableBufferPointer { op in
                    for i in 0..<xp.count { op[i] = f(xp[i], yp[i]) }
                }
            }
        }
        return out
    }
}

/// `x0 = (sample - sqrt(beta_t) * eps) / sqrt(alpha_t)` and friends: the predicted clean latent of DDIM and LCM.
func predictedOriginalSample(_ type: PredictionType, modelOutput: [Float], sample: [Float],
                             alphaProd: Float, betaProd: Float) -> [Float] {
    let sqrtAlpha = alphaProd.squareRoot(), sqrtBeta = betaProd.squareRoot()
    switch type {
    case .epsilon: return Elementwise.zip(sample, modelOutput) { s, m in (s - sqrtBeta * m) / sqrtAlpha }
    case .sample: return modelOutput
    case .vPrediction: return Elementwise.difference(sqrtAlpha, sample, sqrtBeta, modelOutput)
    }
}
