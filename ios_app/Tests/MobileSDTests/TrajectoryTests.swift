import Foundation
import XCTest
@testable import MobileSD

/// A whole CFG generation of the digits model recorded in PyTorch (golden section "trajectory"): from the seed,
/// with the recorded UNet predictions in place of the graphs, every UNet input, guided prediction and latent
/// within 2e-6 relative, for each scheduler (LCM's step noise continues the seed's generator).
final class TrajectoryTests: XCTestCase {
    func testEverySchedulerReproducesTheHostLoop() throws {
        let g = try GoldenVectors.shared()
        let section = try g.section("trajectory")
        let settings = section["settings"]!
        let steps = settings["steps"]!.int!, guidance = Float(settings["guidance"]!.double!)
        let seed = UInt64(settings["seed"]!.double!)
        // the model's own scheduler config (the trajectory and the scheduler vectors come from the same model)
        let config = try g.section("schedulers")["configs"]!["sd_epsilon"]!.object!
        let cases = section["cases"]?.array ?? []
        XCTAssertEqual(cases.count, 4)
        for c in cases {
            let name = c["scheduler"]!.string!
            let scheduler = try SchedulerFactory.make(try SchedulerKind.named(name), config: config, steps: steps)
            XCTAssertEqual(scheduler.timesteps.map(Double.init), (c["timesteps"]?.array ?? []).compactMap(\.double), name)
            let random = TorchRandomSource(seed: seed)
            let noise = random.normal(shape: GoldenVectors.shape(c["noise"]))
            XCTAssertEqual(noise.map(\.bitPattern), try g.floats(c["noise"]).map(\.bitPattern), "\(name) noise")
            let latents = rows(try g.floats(c["latents"]), steps + 1)
            let inputs = rows(try g.floats(c["unet_inputs"]), steps)
            let predictions = rows(try g.floats(c["unet_predictions"]), steps)
            let guidedExpected = rows(try g.floats(c["guided_predictions"]), steps)
            var x = noise.map { $0 * scheduler.initNoiseSigma }
            XCTAssertLessThanOrEqual(relativeL2(x, latents[0]), 2e-6, "\(name) latent 0")
            for k in 0..<steps {
                let s = scheduler.scaleModelInput(x, stepIndex: k)
                XCTAssertLessThanOrEqual(relativeL2(s + s, inputs[k]), 2e-6, "\(name) unet input \(k)")
                let half = predictions[k].count / 2
                let u = Array(predictions[k][..<half]), cond = Array(predictions[k][half...])
                let guided = zip(u, cond).map { $0 + guidance * ($1 - $0) }
                XCTAssertLessThanOrEqual(relativeL2(guided, guidedExpected[k]), 2e-6, "\(name) guided \(k)")
                x = scheduler.step(modelOutput: guided, stepIndex: k, sample: x, random: random)
                XCTAssertLessThanOrEqual(relativeL2(x, latents[k + 1]), 2e-6, "\(name) latent \(k + 1)")
            }
        }
    }
}
