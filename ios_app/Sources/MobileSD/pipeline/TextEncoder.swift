/// Prompt -> token ids (BPETokenizer) -> the text encoder graph -> last hidden states [1, 77, D].
public final class TextEncoder {
    public let tokenizer: BPETokenizer
    let runner: GraphRunner

    public init(tokenizer: BPETokenizer, runner: GraphRunner) {
        self.tokenizer = tokenizer
        self.runner = runner
    }

    public func encode(_ prompt: String) throws -> Tensor {
        let ids = tokenizer.tokenize(prompt).ids
        let spec = runner.graph.inputs[0]
        let out = try runner.run([spec.name: Tensor(shape: spec.shape, ints: ids)])
        guard let hidden = out[runner.graph.outputs[0].name] else {
            throw MobileSDError("the text encoder returned no \(runner.graph.outputs[0].name)", fix: "re-export the bundle")
        }
        return hidden
    }
}
