// TextEncoder: token ids [1, 77] int32 -> last hidden states [1, 77, D] (the UNet's cross-attention context).

export class TextEncoder {
  constructor(resources, tokenizer) {
    this.resources = resources;
    this.tokenizer = tokenizer;
    this.graph = resources.bundle.textEncoder;
  }

  /** The hidden states of one prompt, Float32Array of 77 * D. */
  async encode(prompt) {
    const ids = this.tokenizer.encode(prompt);
    const input = this.graph.inputs[0];
    const { outputs } = await this.resources.run(this.graph.name, {
      [input.name]: { data: ids, shape: input.shape, dtype: 'int32' },
    });
    return outputs[0];
  }

  release() {
    this.resources.release([this.graph.name]);
  }
}
