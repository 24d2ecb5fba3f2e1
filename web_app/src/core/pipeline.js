// StableDiffusionPipeline: the generation loop every client runs (docs/manifest.md "The loop an app runs";
// the reference is mobilesd/pipeline.py HostPipeline.generate):
//
//   tokenize negative + prompt -> text encoder twice -> x = randn(seed) * init_noise_sigma
//   per timestep: scale_model_input, UNet (cfg.unet_batch 2: one call on [uncond, cond]; 1: two calls;
//   no guidance: one call on the prompt), CFG uncond + g * (cond - uncond), scheduler step
//   -> decoder -> pixels round(x * 255), NHWC RGB.
//
// Guidance runs when cfg.mode is not "none" and guidance > 1 (diffusers' do_classifier_free_guidance).

import { BundleError } from './bundle_error.js';
import { Decoder } from './decoder.js';
import { SampleTimer } from './sample_timer.js';
import { makeScheduler } from './scheduler_config.js';
import { TextEncoder } from './text_encoder.js';
import { TorchRandomSource } from './torch_random_source.js';
import { Unet } from './unet.js';

const f = Math.fround;

function concat(a, b) {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

export class StableDiffusionPipeline {
  /**
   * @param resources a ResourceManager over the verified bundle
   * @param tokenizer a BPETokenizer
   * @param schedulerConfig the bundle's scheduler_config.json (parsed)
   */
  constructor(resources, tokenizer, schedulerConfig) {
    this.resources = resources;
    this.manifest = resources.bundle.manifest;
    this.schedulerConfig = schedulerConfig;
    this.textEncoder = new TextEncoder(resources, tokenizer);
    this.unet = new Unet(resources);
    this.decoder = new Decoder(resources);
  }

  /** The settings a generation runs with: the manifest's defaults for what is not given. */
  settings(options) {
    const m = this.manifest;
    const s = {
      prompt: options.prompt ?? '',
      negativePrompt: options.negativePrompt ?? m.cfg.negative_prompt_default ?? '',
      steps: options.steps ?? 20,
      guidance: options.guidance ?? m.cfg.default_guidance,
      seed: options.seed ?? 0,
      scheduler: options.scheduler ?? m.scheduler.default,
    };
    if (!m.scheduler.supported.includes(s.scheduler)) {
      throw new BundleError(`scheduler ${JSON.stringify(s.scheduler)} is not one this bundle supports`,
        `choose one of ${m.scheduler.supported.join(', ')}`);
    }
    if (!Number.isInteger(s.steps) || s.steps < 1) throw new BundleError(`steps must be at least 1 (got ${s.steps})`, 'use 20, for example');
    if (!Number.isInteger(s.seed) || s.seed < 0 || s.seed > 0xFFFFFFFF) {
      throw new BundleError(`seed must be an integer in [0, 2^32 - 1] (got ${s.seed})`, 'use 0, for example');
    }
    if (!(s.guidance >= 0)) throw new BundleError(`guidance must be a number >= 0 (got ${s.guidance})`, 'use 7.5, for example');
    s.cfg = m.cfg.mode !== 'none' && s.guidance > 1;
    s.cfgMode = !s.cfg ? 'none' : (m.cfg.unet_batch === 2 ? 'batch' : 'sequential');
    return s;
  }

  /**
   * One image. Returns {image (Uint8Array H*W*3), width, height, latent, timer, settings}.
   * onStep(k, steps) is called after every denoising step.
   */
  async generate(options, { onStep = () => {}, timer = new SampleTimer() } = {}) {
    const s = this.settings(options);
    const scheduler = makeScheduler(s.scheduler, this.schedulerConfig, { timestepSpacing: this.manifest.scheduler.timestep_spacing });
    scheduler.setTimesteps(s.steps);
    const tStart = SampleTimer.now();

    const [uncond, cond] = await timer.time('text_encoder', async () => [
      s.cfg ? await this.textEncoder.encode(s.negativePrompt) : null,
      await this.textEncoder.encode(s.prompt),
    ]);
    this.textEncoder.release();

    const [batch, ...latentShape] = this.unet.sampleShape;
    const n = latentShape.reduce((a, b) => a * b, 1);
    const random = new TorchRandomSource(s.seed);
    let x = random.normalArray([1, ...latentShape]).map((v) => f(v * scheduler.initNoiseSigma));
    const g = f(s.guidance);
    const context = s.cfg && batch === 2 ? concat(uncond, cond) : (!s.cfg && batch === 2 ? concat(cond, cond) : null);
    for (let k = 0; k < scheduler.timesteps.length; k++) {
      const t = scheduler.timesteps[k];
      timer.beginStep();
      let pred;
      if (s.cfg) {
        const modelIn = scheduler.scaleModelInput(concat(x, x), t);
        let pu;
        let pc;
        if (batch === 2) {
          const both = await this.unet.predict(modelIn, t, context, timer);
          pu = both.subarray(0, n);
          pc = both.subarray(n, 2 * n);
        } else {
          pu = await this.unet.predict(modelIn.subarray(0, n), t, uncond, timer);
          pc = await this.unet.predict(modelIn.subarray(n), t, cond, timer);
        }
        pred = new Float32Array(n);
        for (let i = 0; i < n; i++) pred[i] = f(pu[i] + f(g * f(pc[i] - pu[i])));
      } else {
        const modelIn = scheduler.scaleModelInput(x, t);
        pred = batch === 2
          ? (await this.unet.predict(concat(modelIn, modelIn), t, context, timer)).slice(0, n)
          : await this.unet.predict(modelIn, t, cond, timer);
      }
      x = scheduler.step(pred, t, x, random);
      timer.endStep();
      onStep(k + 1, scheduler.timesteps.length);
    }
    this.unet.release();

    const image = await timer.time('vae_decoder', () => this.decoder.decode(x));
    this.decoder.release();
    const rgb = Decoder.toRGB8(image);
    timer.add('end_to_end', SampleTimer.now() - tStart);
    return { image: rgb, imageFloat: image, width: this.decoder.width, height: this.decoder.height, latent: x, timer, settings: s,
      timesteps: scheduler.timesteps };
  }
}
