// LCMScheduler (diffusers 0.42): timesteps from original_inference_steps (timestep_spacing does not apply),
// c_skip / c_out boundary conditions, fresh noise every step but the last, drawn from the same random source
// as the initial latent.

import { linspace } from './numpy_like.js';
import { Scheduler, f } from './scheduler.js';
import { SchedulerConfigError } from './scheduler_config_error.js';

const SIGMA_DATA_SQ = 0.25;   // sigma_data = 0.5

export class LCMScheduler extends Scheduler {
  static get diffusersClass() { return 'LCMScheduler'; }

  constructor(config) {
    super(config);
    if (config.thresholding) {
      throw new SchedulerConfigError('LCM with thresholding is not supported by the web client',
        'use a config with thresholding false');
    }
  }

  setTimesteps(steps) {
    this.checkSteps(steps);
    const c = this.config;
    const original = c.original_inference_steps;
    if (original > c.num_train_timesteps) {
      throw new SchedulerConfigError(`original_inference_steps ${original} exceeds num_train_timesteps`, 'fix the scheduler config');
    }
    const k = Math.floor(c.num_train_timesteps / original);
    const origin = [];
    for (let i = 1; i <= original; i++) origin.push(i * k - 1);
    if (Math.floor(origin.length / steps) < 1 || steps > original) {
      throw new SchedulerConfigError(`LCM runs at most ${original} steps (original_inference_steps), not ${steps}`,
        `use --steps ${Math.min(original, 8)} or fewer than ${original + 1}`);
    }
    origin.reverse();
    this.timesteps = linspace(0, origin.length, steps, false).map((x) => origin[Math.floor(x)]);
    this.numInferenceSteps = steps;
    this.stepIndex = null;
  }

  step(modelOutput, t, sample, random) {
    this.initStepIndex(t);
    const prevIndex = this.stepIndex + 1;
    const prevT = prevIndex < this.timesteps.length ? this.timesteps[prevIndex] : t;
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProdPrev(prevT);
    const scaled = f(t * f(this.config.timestep_scaling));
    const s2 = f(f(scaled * scaled) + SIGMA_DATA_SQ);
    const cSkip = f(SIGMA_DATA_SQ / s2);
    const cOut = f(scaled / f(Math.sqrt(s2)));
    const { x0 } = this.predictOriginal(modelOutput, sample, alphaProdT);
    const n = sample.length;
    const denoised = new Float32Array(n);
    for (let i = 0; i < n; i++) denoised[i] = f(f(cOut * x0[i]) + f(cSkip * sample[i]));
    let out = denoised;
    if (this.stepIndex !== this.numInferenceSteps - 1) {
      if (!random) throw new Error('LCM needs the random source of the initial latent for its step noise');
      const noise = random.normalArray([n]);
      const a = f(Math.sqrt(alphaProdPrev));
      const b = f(Math.sqrt(f(1 - alphaProdPrev)));
      out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = f(f(a * denoised[i]) + f(b * noise[i]));
    }
    this.stepIndex += 1;
    return out;
  }
}
