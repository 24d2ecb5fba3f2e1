// DDIMScheduler (diffusers 0.42) at eta 0 (deterministic: no noise is drawn).

import { arange, linspace, roundHalfEven } from './numpy_like.js';
import { Scheduler, f } from './scheduler.js';
import { SchedulerConfigError } from './scheduler_config_error.js';

export class DDIMScheduler extends Scheduler {
  static get diffusersClass() { return 'DDIMScheduler'; }

  constructor(config) {
    super(config);
    if (config.thresholding) {
      throw new SchedulerConfigError('DDIM with thresholding is not supported by the web client',
        'use a config with thresholding false (SD 1.x / 2.x)');
    }
  }

  setTimesteps(steps) {
    this.checkSteps(steps);
    const c = this.config;
    const N = c.num_train_timesteps;
    let ts;
    if (c.timestep_spacing === 'linspace') {
      ts = linspace(0, N - 1, steps).map(roundHalfEven).reverse();
    } else if (c.timestep_spacing === 'leading') {
      const ratio = Math.floor(N / steps);
      ts = arange(0, steps).map((i) => roundHalfEven(i * ratio)).reverse().map((t) => t + c.steps_offset);
    } else if (c.timestep_spacing === 'trailing') {
      ts = arange(N, 0, -N / steps).map((t) => roundHalfEven(t) - 1);
    } else {
      throw new SchedulerConfigError(`timestep_spacing ${c.timestep_spacing} is not supported`, 'use leading, trailing or linspace');
    }
    this.timesteps = ts;
    this.numInferenceSteps = steps;
    this.stepIndex = null;
  }

  step(modelOutput, t, sample) {
    const N = this.config.num_train_timesteps;
    const prevT = t - Math.floor(N / this.numInferenceSteps);
    const alphaProdT = this.alphasCumprod[t];
    const alphaProdPrev = this.alphaProdPrev(prevT);
    const { x0, eps } = this.predictOriginal(modelOutput, sample, alphaProdT);
    // eta 0: std_dev_t = 0, so the direction term is sqrt(1 - alpha_prev) * eps
    const cDir = f(Math.sqrt(f(1 - alphaProdPrev)));
    const cX0 = f(Math.sqrt(alphaProdPrev));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) out[i] = f(f(cX0 * x0[i]) + f(cDir * eps[i]));
    return out;
  }
}
