import Foundation

/// The schedulers this client implements, by the names the manifest and the CLI use.
public enum SchedulerKind: String, CaseIterable, Sendable {
    case dpm, euler, ddim, lcm

    /// The diffusers class whose behaviour (0.42) it follows.
    public var diffusersClass: String {
        switch self {
        case .dpm: return "DPMSolverMultistepScheduler"
        case .euler: return "EulerDiscreteScheduler"
        case .ddim: return "DDIMScheduler"
        case .lcm: return "LCMScheduler"
        }
    }

    public static func named(_ name: String) throws -> SchedulerKind {
        guard let kind = SchedulerKind(rawValue: name) else {
            throw MobileSDError("unknown scheduler '\(name)'",
                                fix: "use one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return kind
    }
}

public enum PredictionType: String, Sendable {
    case epsilon, vPrediction = "v_prediction", sample
}

/// A diffusers scheduler config as `SchedulerClass.from_config(bundle_config)` resolves it: the bundle's
/// `scheduler_config.json` is a raw diffusers config (a PNDMScheduler one for SD 1.x); keys it lacks take the
/// defaults of the scheduler class in diffusers 0.42 (the golden vectors' `resolved_configs` list them).
/// Options this client does not implement are refused by name, never ignored.
public struct SchedulerConfig: Sendable {
    public var numTrainTimesteps = 1000
    public var betaStart = 0.0001
    public var betaEnd = 0.02
    public var betaSchedule = "linear"
    public var trainedBetas: [Double]?
    public var predictionType = PredictionType.epsilon
    public var timestepSpacing = "linspace"
    public var stepsOffset = 0
    public var rescaleBetasZeroSNR = false
    // DDIM, LCM
    public var clipSample = false
    public var clipSampleRange = 1.0
    public var setAlphaToOne = true
    // DPM-Solver
    public var solverOrder = 2
    public var algorithmType = "dpmsolver++"
    public var solverType = "midpoint"
    public var lowerOrderFinal = true
    public var eulerAtFinal = false
    public var finalSigmasType = "zero"
    public var lambdaMinClipped = -Double.infinity
    // LCM
    public var originalInferenceSteps = 50
    public var timestepScaling = 10.0

    public init() {}

    /// Resolve `raw` (a diffusers config object) for `kind`. `timestepSpacing` (the manifest's
    /// `scheduler.timestep_spacing`) overrides the config's when given.
    public static func resolve(_ raw: [String: JSONValue], for kind: SchedulerKind,
                               timestepSpacing: String? = nil) throws -> SchedulerConfig {
        var c = SchedulerConfig()
        // class defaults that differ from the common ones above
        switch kind {
        case .dpm: break
        case .euler: break
        case .ddim:
            c.clipSample = true
            c.timestepSpacing = "leading"
        case .lcm:
            c.betaStart = 0.00085
            c.betaEnd = 0.012
            c.betaSchedule = "scaled_linear"
            c.timestepSpacing = "leading"
        }
        let reader = ConfigReader(raw: raw, kind: kind)
        c.numTrainTimesteps = try reader.int("num_train_timesteps") ?? c.numTrainTimesteps
        c.betaStart = try reader.double("beta_start") ?? c.betaStart
        c.betaEnd = try reader.double("beta_end") ?? c.betaEnd
        c.betaSchedule = try reader.string("beta_schedule") ?? c.betaSchedule
        c.trainedBetas = try reader.doubles("trained_betas")
        if let p = try reader.string("prediction_type") {
            guard let type = PredictionType(rawValue: p) else {
                throw reader.unsupported("prediction_type", p, "epsilon, v_prediction or sample")
            }
            c.predictionType = type
        }
        c.timestepSpacing = try timestepSpacing ?? reader.string("timestep_spacing") ?? c.timestepSpacing
        c.stepsOffset = try reader.int("steps_offset") ?? c.stepsOffset
        c.rescaleBetasZeroSNR = try reader.bool("rescale_betas_zero_snr") ?? false
        guard ["linear", "scaled_linear", "squaredcos_cap_v2"].contains(c.betaSchedule) else {
            throw reader.unsupported("beta_schedule", c.betaSchedule, "linear, scaled_linear or squaredcos_cap_v2")
        }
        if kind != .lcm, !["linspace", "leading", "trailing"].contains(c.timestepSpacing) {
            throw reader.unsupported("timestep_spacing", c.timestepSpacing, "linspace, leading or trailing")
        }
        if try reader.bool("thresholding") == true {
            throw reader.unsupported("thresholding", "true", "false (dynamic thresholding is for pixel-space models)")
        }
        switch kind {
        case .dpm:
            c.solverOrder = try reader.int("solver_order") ?? 2
            c.algorithmType = try reader.string("algorithm_type") ?? "dpmsolver++"
            c.solverType = try reader.string("solver_type") ?? "midpoint"
            c.lowerOrderFinal = try reader.bool("lower_order_final") ?? true
            c.eulerAtFinal = try reader.bool("euler_at_final") ?? false
            c.finalSigmasType = try reader.string("final_sigmas_type") ?? "zero"
            c.lambdaMinClipped = try reader.double("lambda_min_clipped") ?? -Double.infinity
            guard (1...3).contains(c.solverOrder) else { throw reader.unsupported("solver_order", "\(c.solverOrder)", "1, 2 or 3") }
            // diffusers maps the deprecated names deis / logrho, bh1, bh2 onto these
            if c.algorithmType == "deis" { c.algorithmType = "dpmsolver++" }
            if ["logrho", "bh1", "bh2"].contains(c.solverType) { c.solverType = "midpoint" }
            guard c.algorithmType == "dpmsolver++" else {
                throw reader.unsupported("algorithm_type", c.algorithmType, "dpmsolver++")
            }
            guard ["midpoint", "heun"].contains(c.solverType) else {
                throw reader.unsupported("solver_type", c.solverType, "midpoint or heun")
            }
            guard ["zero", "sigma_min"].contains(c.finalSigmasType) else {
                throw reader.unsupported("final_sigmas_type", c.finalSigmasType, "zero or sigma_min")
            }
            try reader.requireFalse(["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                                     "use_flow_sigmas", "use_dynamic_shifting"])
            if let v = raw["variance_type"], !v.isNull {
                throw reader.unsupported("variance_type", "\(v)", "null (learned variance is not supported)")
            }
        case .euler:
            c.finalSigmasType = try reader.string("final_sigmas_type") ?? "zero"
            guard ["zero", "sigma_min"].contains(c.finalSigmasType) else {
                throw reader.unsupported("final_sigmas_type", c.finalSigmasType, "zero or sigma_min")
            }
            if let t = try reader.string("interpolation_type"), t != "linear" {
                throw reader.unsupported("interpolation_type", t, "linear")
            }
            if let t = try reader.string("timestep_type"), t != "discrete" {
                throw reader.unsupported("timestep_type", t, "discrete")
            }
            try reader.requireFalse(["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
        case .ddim, .lcm:
            c.clipSample = try reader.bool("clip_sample") ?? c.clipSample
            c.clipSampleRange = try reader.double("clip_sample_range") ?? 1.0
            c.setAlphaToOne = try reader.bool("set_alpha_to_one") ?? true
            if kind == .lcm {
                c.originalInferenceSteps = try reader.int("original_inference_steps") ?? 50
                c.timestepScaling = try reader.double("timestep_scaling") ?? 10.0
            }
        }
        return c
    }
}

/// Typed reads of a raw config object, with errors that name the key.
private struct ConfigReader {
    let raw: [String: JSONValue]
    let kind: SchedulerKind

    private func value(_ key: String) -> JSONValue? {
        guard let v = raw[key], !v.isNull else { return nil }
        return v
    }

    private func wrongType(_ key: String, _ expected: String) -> MobileSDError {
        MobileSDError("scheduler config key '\(key)' is not \(expected)", fix: "fix scheduler_config.json or re-export the bundle")
    }

    func unsupported(_ key: String, _ value: String, _ supported: String) -> MobileSDError {
        MobileSDError("scheduler config \(key) = \(value) is not supported by this client's \(kind.diffusersClass)",
                      fix: "use \(supported), or another scheduler")
    }

    func int(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard let i = v.int else { throw wrongType(key, "an integer") }
        return i
    }

    func double(_ key: String) throws -> Double? {
        guard let v = value(key) else { return nil }
        guard let d = v.double else { throw wrongType(key, "a number") }
        return d
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.string else { throw wrongType(key, "a string") }
        return s
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.bool else { throw wrongType(key, "true or false") }
        return b
    }

    func doubles(_ key: String) throws -> [Double]? {
        guard let v = value(key) else { return nil }
        guard let a = v.array, a.allSatisfy({ $0.double != nil }) else { throw wrongType(key, "a list of numbers") }
        return a.compactMap(\.double)
    }

    func requireFalse(_ keys: [String]) throws {
        for key in keys where try bool(key) == true {
            throw unsupported(key, "true", "false")
        }
    }
}
