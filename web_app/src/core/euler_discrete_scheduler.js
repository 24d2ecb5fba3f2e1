// EulerDiscreteScheduler (diffusers 0.42): linear sigma interpolation, s_churn 0 (diffusers draws noise at
// s_churn > 0 only, so nothing is drawn here), final_sigmas_type zero | sigma_min.

import { arange, interp, linspace, roundHalfEven } from './numpy_like.js';
import { trainingSigmas } from './noise_schedule.js';
import { Scheduler, f } from './scheduler.js';
import { SchedulerConfigError } from './scheduler_config_error.js';

export class EulerDiscreteScheduler extends Scheduler {
  static get diffusersClass() { return 'EulerDiscreteScheduler'; }

  constructor(config) {
    super(config);
    const c = config;
    const unsupported = [
      [c.interpolation_type !== 'linear', `interpolation_type ${c.interpolation_type}`],
      [c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas, 'karras / exponential / beta sigmas'],
      [c.timestep_type !== 'discrete', `timestep_type ${c.timestep_type}`],
    ].filter(([bad]) => bad).map(([, what]) => what);
    if (unsupported.length) {
      throw new SchedulerConfigError(`Euler config not supported by the web client: ${unsupported.join(', ')}`,
        'the clients implement discrete timesteps with linear sigma interpolation');
    }
    this.trainSigmas = trainingSigmas(this.alphasCumprod);
  }

  setTimesteps(steps) {
    this.checkSteps(steps);
    const c = this.config;
    const N = c.num_train_timesteps;
    let ts;
    if (c.timestep_spacing === 'linspace') {
      ts = linspace(0, N - 1, steps).map(f).reverse();
    } else if (c.timestep_spacing === 'leading') {
      const ratio = Math.floor(N / steps);
      ts = arange(0, steps).map((i) => roundHalfEven(i * ratio)).reverse().map((t) => f(t + c.steps_offset));
    } else if (c.timestep_spacing === 'trailing') {
      ts = arange(N, 0, -N / steps).map((t) => f(roundHalfEven(t) - 1));
    } else {
      throw new SchedulerConfigError(`timestep_spacing ${c.timestep_spacing} is not supported`, 'use leading, trailing or linspace');
    }
    const xp = Array.from(this.trainSigmas, (_, i) => i);
    const sigmas = ts.map((t) => interp(t, xp, this.trainSigmas));
    let sigmaLast;
    if (c.final_sigmas_type === 'zero') sigmaLast = 0;
    else if (c.final_sigmas_type === 'sigma_min') sigmaLast = this.trainSigmas[0];
    else throw new SchedulerConfigError(`final_sigmas_type ${c.final_sigmas_type} is not supported`, 'use zero or sigma_min');
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.timesteps = ts;
    this.numInferenceSteps = steps;
    this.stepIndex = null;
    let max = 0;
    for (const s of this.sigmas) max = Math.max(max, s);
    this.initNoiseSigma = (c.timestep_spacing === 'linspace' || c.timestep_spacing === 'trailing')
      ? max : f(Math.sqrt(f(f(max * max) + 1)));
  }

  scaleModelInput(sample, t) {
    this.initStepIndex(t);
    const sigma = this.sigmas[this.stepIndex];
    const d = f(Math.sqrt(f(f(sigma * sigma) + 1)));
    return sample.map((v) => f(v / d));
  }

  step(modelOutput, t, sample) {
    this.initStepIndex(t);
    const sigma = this.sigmas[this.stepIndex];
    const sigmaHat = sigma;   // gamma = 0 at s_churn 0: sigma * (0 + 1)
    const n = sample.length;
    const pred = new Float32Array(n);
    switch (this.config.prediction_type) {
      case 'epsilon':
        for (let i = 0; i < n; i++) pred[i] = f(sample[i] - f(sigmaHat * modelOutput[i]));
        break;
      case 'v_prediction': {
        const q = f(f(sigma * sigma) + 1);
        const cOut = f(-sigma / f(Math.sqrt(q)));
        for (let i = 0; i < n; i++) pred[i] = f(f(modelOutput[i] * cOut) + f(sample[i] / q));
        break;
      }
      case 'sample':
      case 'original_sample':
        pred.set(modelOutput);
        break;
      default:
        throw new SchedulerConfigError(`prediction_type ${this.config.prediction_type} is not supported`,
          'use epsilon, v_prediction or sample');
    }
    const dt = f(this.sigmas[this.stepIndex + 1] - sigmaHat);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const derivative = f(f(sample[i] - pred[i]) / sigmaHat);
      out[i] = f(sample[i] + f(derivative * dt));
    }
    this.stepIndex += 1;
    return out;
  }
}
