// RandomSource: where the pipeline's Gaussian noise comes from (initial latent, LCM's per-step noise).
//
// As in Apple's ml-stable-diffusion (RandomSource protocol, TorchRandomSource), a source is a stream: the
// pipeline draws the initial latent from it, and a scheduler that needs fresh noise every step (LCM) draws
// the next values from the same stream, exactly as diffusers passes one torch.Generator through.

export class RandomSource {
  /** @returns {Float32Array} standard normal values for a tensor of this shape, in C order */
  normalArray(shape) {   // eslint-disable-line no-unused-vars
    throw new Error(`${this.constructor.name} does not implement normalArray`);
  }
}
