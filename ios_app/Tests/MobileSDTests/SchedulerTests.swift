import Foundation
import XCTest
@testable import MobileSD

/// Schedulers against diffusers 0.42 (golden section "schedulers"): for every config (SD epsilon, SD 2 v-prediction,
/// trailing spacing) x scheduler x steps (1, 4, 20, 50): timesteps exactly; sigmas, init_noise_sigma and every
/// scaled input and sample within 2e-6 relative, running the whole chain from the seed's noise.
final class SchedulerTests: XCTestCase {
    // diffusers steps in float32, this client in double: float32 rounding over 50 DPM steps reaches 1.2e-6 on
    // some CPUs (1e-6 failed on one CI machine); a wrong formula is off by 1e-3 or more
    static let tolerance = 2e-6

    func testEveryCaseFollowsDiffusers() throws {
        let g = try GoldenVectors.shared()
        let section = try g.section("schedulers")
        let configs = section["configs"]!.object!
        let cases = section["cases"]?.array ?? []
        XCTAssertEqual(cases.count, 3 * 4 * 4)
        var worst = 0.0
        for c in cases {
            let name = c["scheduler"]!.string!, configName = c["config"]!.string!, steps = c["steps"]!.int!
            let label = "\(configName)/\(name)/\(steps)"
            let scheduler = try SchedulerFactory.make(try SchedulerKind.named(name), config: configs[configName]!.object!,
                                                      steps: steps)
            XCTAssertEqual(scheduler.timesteps.map(Double.init), (c["timesteps"]?.array ?? []).compactMap(\.double), label)
            if let expected = c["sigmas"]?.array?.compactMap(\.double) {
                let got = try XCTUnwrap(scheduler.sigmas, label)
                XCTAssertLessThanOrEqual(relativeL2(got, expected.map { Float($0) }), Self.tolerance, "\(label) sigmas")
            } else {
                XCTAssertNil(scheduler.sigmas, label)
            }
            let sigma0 = c["init_noise_sigma"]!.double!
            XCTAssertEqual(Double(scheduler.initNoiseSigma), sigma0, accuracy: sigma0 * Self.tolerance, "\(label) init_noise_sigma")

            let samples = rows(try g.floats(c["samples"]), steps + 1)
            let outputs = rows(try g.floats(c["model_outputs"]), steps)
            let scaled = rows(try g.floats(c["scaled_model_inputs"]), steps)
            let random = TorchRandomSource(seed: UInt64(c["noise_seed"]!.double!))
            var x = random.normal(count: samples[0].count).map { $0 * scheduler.initNoiseSigma }
            XCTAssertLessThanOrEqual(relativeL2(x, samples[0]), Self.tolerance, "\(label) initial latent")
            for k in 0..<steps {
                let s = scheduler.scaleModelInput(x, stepIndex: k)
                let es = relativeL2(s, scaled[k])
                XCTAssertLessThanOrEqual(es, Self.tolerance, "\(label) scaled input \(k)")
                x = scheduler.step(modelOutput: outputs[k], stepIndex: k, sample: x, random: random)
                let e = relativeL2(x, samples[k + 1])
                worst = max(worst, e, es)
                XCTAssertLessThanOrEqual(e, Self.tolerance, "\(label) sample \(k + 1)")
            }
        }
        print("scheduler golden cases: worst relative L2 \(worst)")
    }

    /// diffusers' defaults for keys the bundle config lacks (golden resolved_configs), for what the client uses.
    func testResolvedConfigsMatchDiffusers() throws {
        let g = try GoldenVectors.shared()
        let section = try g.section("schedulers")
        let configs = section["configs"]!.object!
        let resolved = section["resolved_configs"]!.object!
        XCTAssertEqual(resolved.count, 12)
        for (key, value) in resolved {
            let parts = key.split(separator: "/").map(String.init)
            let kind = try SchedulerKind.named(parts[1])
            let c = try SchedulerConfig.resolve(configs[parts[0]]!.object!, for: kind)
            let d = value["config"]!
            XCTAssertEqual(d["_class_name"]?.string, kind.diffusersClass, key)
            XCTAssertEqual(c.numTrainTimesteps, d["num_train_timesteps"]?.int, key)
            XCTAssertEqual(c.betaStart, d["beta_start"]?.double, key)
            XCTAssertEqual(c.betaEnd, d["beta_end"]?.double, key)
            XCTAssertEqual(c.betaSchedule, d["beta_schedule"]?.string, key)
            XCTAssertEqual(c.predictionType.rawValue, d["prediction_type"]?.string, key)
            XCTAssertEqual(c.timestepSpacing, d["timestep_spacing"]?.string, key)
            XCTAssertEqual(c.stepsOffset, d["steps_offset"]?.int, key)
            XCTAssertEqual(c.rescaleBetasZeroSNR, d["rescale_betas_zero_snr"]?.bool, key)
            switch kind {
            case .dpm:
                XCTAssertEqual(c.solverOrder, d["solver_order"]?.int, key)
                XCTAssertEqual(c.algorithmType, d["algorithm_type"]?.string, key)
                XCTAssertEqual(c.solverType, d["solver_type"]?.string, key)
                XCTAssertEqual(c.lowerOrderFinal, d["lower_order_final"]?.bool, key)
                XCTAssertEqual(c.eulerAtFinal, d["euler_at_final"]?.bool, key)
                XCTAssertEqual(c.finalSigmasType, d["final_sigmas_type"]?.string, key)
                XCTAssertEqual(value["nonfinite"]?["lambda_min_clipped"]?.string, "-inf", key)
                XCTAssertEqual(c.lambdaMinClipped, -.infinity, key)
            case .euler:
                XCTAssertEqual(c.finalSigmasType, d["final_sigmas_type"]?.string, key)
                XCTAssertEqual(d["interpolation_type"]?.string, "linear", key)
            case .ddim, .lcm:
                XCTAssertEqual(c.clipSample, d["clip_sample"]?.bool, key)
                XCTAssertEqual(c.clipSampleRange, d["clip_sample_range"]?.double, key)
                XCTAssertEqual(c.setAlphaToOne, d["set_alpha_to_one"]?.bool, key)
                if kind == .lcm {
                    XCTAssertEqual(c.originalInferenceSteps, d["original_inference_steps"]?.int, key)
                    XCTAssertEqual(c.timestepScaling, d["timestep_scaling"]?.double, key)
                }
            }
        }
    }

    func testUnsupportedOptionsAreRefusedByName() {
        let base: [String: JSONValue] = ["beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012]
        for (key, value, kind): (String, JSONValue, SchedulerKind) in [
            ("use_karras_sigmas", true, .dpm), ("algorithm_type", "sde-dpmsolver++", .dpm), ("thresholding", true, .ddim),
            ("timestep_type", "continuous", .euler), ("beta_schedule", "exotic", .lcm),
        ] {
            var config = base
            config[key] = value
            XCTAssertThrowsError(try SchedulerFactory.make(kind, config: config, steps: 4), "\(key)") { error in
                XCTAssertTrue("\(error)".contains(key), "\(error)")
            }
        }
        XCTAssertThrowsError(try SchedulerFactory.make(.dpm, config: base, steps: 0))
        XCTAssertThrowsError(try SchedulerFactory.make(.lcm, config: base, steps: 51))
    }
}
