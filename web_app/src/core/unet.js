// Unet: one denoising call through the UNet graph or its chunks, chained by tensor name (docs/manifest.md,
// "Chunks pass named tensors"): a dictionary name -> tensor starts with sample, timestep and
// encoder_hidden_states; each chunk reads its inputs from it by name and stores its outputs under their
// manifest names (TFLite outputs output_0.. map to the manifest's outputs by position), then every
// `alias: source` of its meta.aliases. The last chunk makes noise_pred.

import { BundleError } from './bundle_error.js';
import { SampleTimer } from './sample_timer.js';

export class Unet {
  constructor(resources) {
    this.resources = resources;
    this.chunks = resources.bundle.unetChunks;
    this.batch = resources.bundle.manifest.cfg.unet_batch;
    const first = this.chunks[0].inputs.find((i) => i.name === 'sample');
    if (!first) throw new BundleError('the first UNet graph has no "sample" input', 're-export the bundle');
    this.sampleShape = first.shape;   // [unet_batch, C, h, w]
  }

  /**
   * noise_pred for `sample` (Float32Array of unet_batch * C*h*w), timestep t, `context` (unet_batch * 77 * D).
   * `timer` (optional SampleTimer) gets each chunk's wall and graph seconds.
   */
  async predict(sample, t, context, timer = null) {
    const state = new Map([
      ['sample', sample],
      ['timestep', new Float32Array([t])],
      ['encoder_hidden_states', context],
    ]);
    const onDevice = new Set();   // chunk outputs left in the runtime's memory (freed when the call is done)
    try {
      for (let i = 0; i < this.chunks.length; i++) {
        const g = this.chunks[i];
        const inputs = {};
        for (const spec of g.inputs) {
          const value = state.get(spec.name);
          if (!value) {
            throw new BundleError(`UNet graph ${g.name} reads tensor ${spec.name}, which no earlier graph makes`,
              're-export the bundle (its chunks and aliases do not chain)');
          }
          inputs[spec.name] = value.device ? value : { data: value, shape: spec.shape, dtype: spec.dtype };
        }
        // what only later chunks read stays in the runtime; noise_pred comes back to the scheduler
        const keep = g.outputs.map((o) => o.name !== 'noise_pred');
        const t0 = SampleTimer.now();
        const { outputs, graphSeconds } = await this.resources.run(g.name, inputs, { keep });
        timer?.chunk(i, SampleTimer.now() - t0, graphSeconds);
        g.outputs.forEach((spec, k) => {
          state.set(spec.name, outputs[k]);
          if (outputs[k]?.device) onDevice.add(outputs[k]);
        });
        for (const [alias, source] of Object.entries(g.meta?.aliases ?? {})) state.set(alias, state.get(source));
      }
      const pred = state.get('noise_pred');
      if (!pred || pred.device) throw new BundleError('no UNet graph makes noise_pred', 're-export the bundle');
      return pred;
    } finally {
      onDevice.forEach((t) => t.delete());
    }
  }

  release() {
    this.resources.release(this.chunks.map((g) => g.name));
  }
}
