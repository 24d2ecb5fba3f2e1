// Decoder: the sampler's latent [1, 4, h, w] -> image [1, H, W, 3] in [0, 1] (the graph applies
// 1 / scaling_factor and the [-1, 1] -> [0, 1] mapping), then pixels round(x * 255) as diffusers does.

import { roundHalfEven } from './numpy_like.js';

export class Decoder {
  constructor(resources) {
    this.resources = resources;
    this.graph = resources.bundle.decoder;
    const [, height, width, channels] = this.graph.outputs[0].shape;
    Object.assign(this, { height, width, channels });
  }

  async decode(latent) {
    const input = this.graph.inputs[0];
    const { outputs } = await this.resources.run(this.graph.name, {
      [input.name]: { data: latent, shape: input.shape, dtype: 'float32' },
    });
    return outputs[0];
  }

  /** NHWC float [0, 1] -> RGB bytes: numpy's (x * 255).round().astype(uint8) in float32. */
  static toRGB8(image) {
    const out = new Uint8Array(image.length);
    for (let i = 0; i < image.length; i++) {
      out[i] = Math.min(255, Math.max(0, roundHalfEven(Math.fround(image[i] * 255))));
    }
    return out;
  }

  release() {
    this.resources.release([this.graph.name]);
  }
}
