/// The VAE decoder graph: latent (1, 4, h, w), as the sampler leaves it (the graph applies 1/scaling_factor),
/// -> image (1, H, W, 3) in [0, 1] -> pixels round(x * 255).
public final class Decoder {
    let runner: GraphRunner

    public init(runner: GraphRunner) {
        self.runner = runner
    }

    public func decode(_ latent: Tensor) throws -> RawImage {
        let out = try runner.run([runner.graph.inputs[0].name: latent])
        guard let image = out[runner.graph.outputs[0].name], image.shape.count == 4, image.shape[3] == 3 else {
            throw MobileSDError("the decoder did not return a (1, H, W, 3) image", fix: "re-export the bundle")
        }
        return RawImage(nhwc: image.floats, width: image.shape[2], height: image.shape[1])
    }
}
