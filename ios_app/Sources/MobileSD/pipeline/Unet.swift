/// One denoising step's UNet, in one graph or a chain of chunks that pass named tensors (docs/manifest.md,
/// "Chunks pass named tensors"): a dictionary name -> tensor starts with the step's inputs; each chunk reads
/// its inputs from it by name and stores its outputs under their names, then its `meta.aliases` (a chunk
/// never outputs a tensor it only received, so the client keeps e.g. `temb` until a later chunk reads it).
public final class Unet {
    let chunks: [GraphRunner]
    let stepIndex: (name: String, timesteps: [Double])?

    public init(chunks: [GraphRunner], stepIndexInput: (name: String, timesteps: [Double])? = nil) {
        self.chunks = chunks
        self.stepIndex = stepIndexInput
    }

    /// The model output for `sample` (B, 4, h, w) at `timestep` given `context` (B, 77, D);
    /// `onChunk(i, seconds)` times each chunk call.
    public func predictNoise(sample: Tensor, timestep: Float, context: Tensor,
                             onChunk: ((Int, Double) -> Void)? = nil) throws -> Tensor {
        var state: [String: Tensor] = ["sample": sample, "timestep": Tensor(shape: [1], floats: [timestep]),
                                       "encoder_hidden_states": context]
        if let (name, table) = stepIndex {
            // the activation table entry of the nearest timestep (mobilesd.components.nearest_step_index)
            var best = 0
            for (i, t) in table.enumerated() where abs(t - Double(timestep)) < abs(table[best] - Double(timestep)) { best = i }
            state[name] = Tensor(shape: [1], floats: [Float(best)])
        }
        var last: Tensor?
        for (i, chunk) in chunks.enumerated() {
            var inputs: [String: Tensor] = [:]
            for spec in chunk.graph.inputs {
                guard let t = state[spec.name] else {
                    throw MobileSDError("UNet chunk \(chunk.graph.name) reads \(spec.name), which no earlier chunk made",
                                        fix: "re-export the bundle (its chunk order or aliases are inconsistent)")
                }
                inputs[spec.name] = t
            }
            let start = ContinuousClock.now
            let outputs = try chunk.run(inputs)
            onChunk?(i, (ContinuousClock.now - start).seconds)
            for spec in chunk.graph.outputs {
                guard let t = outputs[spec.name] else {
                    throw MobileSDError("UNet chunk \(chunk.graph.name) returned no \(spec.name)", fix: "re-export the bundle")
                }
                state[spec.name] = t
            }
            for (alias, source) in chunk.graph.aliases {
                guard let t = state[source] else {
                    throw MobileSDError("UNet chunk \(chunk.graph.name): alias \(alias) names \(source), which does not exist",
                                        fix: "re-export the bundle")
                }
                state[alias] = t
            }
            last = chunk.graph.outputs.first.flatMap { outputs[$0.name] }
        }
        guard let noise = state["noise_pred"] ?? last else {
            throw MobileSDError("the UNet made no noise_pred", fix: "re-export the bundle")
        }
        return noise
    }
}
