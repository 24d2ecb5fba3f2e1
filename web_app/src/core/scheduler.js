// Scheduler: the interface every sampler implements (Apple's ml-stable-diffusion Scheduler protocol), with
// the diffusers semantics the host pipeline (mobilesd/pipeline.py) runs.
//
//   setTimesteps(steps)                      the inference timesteps (numbers, as diffusers' scheduler.timesteps)
//   initNoiseSigma                           the initial latent is randn * initNoiseSigma
//   scaleModelInput(sample, t) -> sample      what the UNet is fed at timestep t (Float32Array in, new out)
//   step(modelOutput, t, sample, random)     the next sample; `random` is the RandomSource the initial latent
//                                            came from (LCM draws its per-step noise from it)
//
// Arithmetic follows torch's float32 tensors op by op (Math.fround after each), so the clients stay within
// the golden vectors' 2e-6 of diffusers.

import { alphasCumprod } from './noise_schedule.js';
import { SchedulerConfigError } from './scheduler_config_error.js';

export const f = Math.fround;

export class Scheduler {
  constructor(config) {
    this.config = config;
    this.alphasCumprod = alphasCumprod(config);
    this.timesteps = [];
    this.numInferenceSteps = null;
    this.stepIndex = null;
    this.initNoiseSigma = 1.0;
  }

  /** diffusers' name for the scheduler (the class a bundle config may name). */
  static get diffusersClass() { return 'Scheduler'; }

  setTimesteps(steps) {   // eslint-disable-line no-unused-vars
    throw new Error(`${this.constructor.name} does not implement setTimesteps`);
  }

  scaleModelInput(sample, t) {   // eslint-disable-line no-unused-vars
    return sample;
  }

  step(modelOutput, t, sample, random) {   // eslint-disable-line no-unused-vars
    throw new Error(`${this.constructor.name} does not implement step`);
  }

  checkSteps(steps) {
    if (!Number.isInteger(steps) || steps < 1) {
      throw new SchedulerConfigError(`steps must be a whole number of at least 1 (got ${steps})`, 'pass --steps 20, for example');
    }
    if (steps > this.config.num_train_timesteps) {
      throw new SchedulerConfigError(`${steps} steps is more than the ${this.config.num_train_timesteps} training timesteps`,
        'use fewer steps');
    }
  }

  /** diffusers' index_for_timestep: the second match when the first timestep occurs twice. */
  indexForTimestep(t) {
    const hits = [];
    this.timesteps.forEach((v, i) => { if (v === t) hits.push(i); });
    if (hits.length === 0) throw new Error(`timestep ${t} is not in the schedule ${this.timesteps}`);
    return hits.length > 1 ? hits[1] : hits[0];
  }

  initStepIndex(t) {
    if (this.stepIndex === null) this.stepIndex = this.indexForTimestep(t);
  }

  /** x0 from the model output, for the prediction types of DDIM-style schedulers (alpha_t = alphas_cumprod[t]). */
  predictOriginal(modelOutput, sample, alphaProdT) {
    const betaProdT = f(1 - alphaProdT);
    const sa = f(Math.sqrt(alphaProdT));
    const sb = f(Math.sqrt(betaProdT));
    const n = sample.length;
    const x0 = new Float32Array(n);
    const eps = new Float32Array(n);
    switch (this.config.prediction_type) {
      case 'epsilon':
        for (let i = 0; i < n; i++) x0[i] = f(f(sample[i] - f(sb * modelOutput[i])) / sa);
        eps.set(modelOutput);
        break;
      case 'v_prediction':
        for (let i = 0; i < n; i++) {
          x0[i] = f(f(sa * sample[i]) - f(sb * modelOutput[i]));
          eps[i] = f(f(sa * modelOutput[i]) + f(sb * sample[i]));
        }
        break;
      case 'sample':
        x0.set(modelOutput);
        for (let i = 0; i < n; i++) eps[i] = f(f(sample[i] - f(sa * x0[i])) / sb);
        break;
      default:
        throw new SchedulerConfigError(`prediction_type ${JSON.stringify(this.config.prediction_type)} is not supported`,
          'use epsilon, v_prediction or sample');
    }
    if (this.config.clip_sample) {
      const r = this.config.clip_sample_range;
      for (let i = 0; i < n; i++) x0[i] = Math.min(r, Math.max(-r, x0[i]));
    }
    return { x0, eps };
  }

  /** alphas_cumprod of the previous timestep, or the final one (1 with set_alpha_to_one, else alphas_cumprod[0]). */
  alphaProdPrev(prevT) {
    if (prevT >= 0) return this.alphasCumprod[prevT];
    return this.config.set_alpha_to_one ? 1.0 : this.alphasCumprod[0];
  }
}
