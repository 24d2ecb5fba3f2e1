// DPMSolverMultistepScheduler (diffusers 0.42): DPM-Solver++ of order 1 or 2, midpoint or heun, with
// lower_order_final and final_sigmas_type zero | sigma_min; timestep_spacing leading / trailing / linspace.

import { arange, interp, linspace, roundHalfEven } from './numpy_like.js';
import { trainingSigmas } from './noise_schedule.js';
import { Scheduler, f } from './scheduler.js';
import { SchedulerConfigError } from './scheduler_config_error.js';

function alphaSigma(sigma) {   // _sigma_to_alpha_sigma_t
  const alpha = f(1 / f(Math.sqrt(f(f(sigma * sigma) + 1))));
  return [alpha, f(sigma * alpha)];
}

function lambda(alpha, sigma) {
  return f(f(Math.log(alpha)) - f(Math.log(sigma)));
}

export class DPMSolverMultistepScheduler extends Scheduler {
  static get diffusersClass() { return 'DPMSolverMultistepScheduler'; }

  constructor(config) {
    super(config);
    const c = config;
    const unsupported = [
      [c.algorithm_type !== 'dpmsolver++', `algorithm_type ${c.algorithm_type}`],
      [!['midpoint', 'heun'].includes(c.solver_type), `solver_type ${c.solver_type}`],
      [!(c.solver_order === 1 || c.solver_order === 2), `solver_order ${c.solver_order}`],
      [c.thresholding, 'thresholding'],
      [c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas || c.use_lu_lambdas || c.use_flow_sigmas,
        'karras / exponential / beta / lu / flow sigmas'],
      [c.variance_type != null, `variance_type ${c.variance_type}`],
    ].filter(([bad]) => bad).map(([, what]) => what);
    if (unsupported.length) {
      throw new SchedulerConfigError(`DPM-Solver config not supported by the web client: ${unsupported.join(', ')}`,
        'the clients implement DPM-Solver++ (order 1-2, midpoint or heun) with discrete sigmas');
    }
    this.trainSigmas = trainingSigmas(this.alphasCumprod);
  }

  lastTimestep() {
    // clip where lambda(t) falls below lambda_min_clipped (-inf by default: no clipping)
    const lmc = this.config.lambda_min_clipped ?? -Infinity;
    const ac = this.alphasCumprod;
    const lambdas = Array.from(ac, (a) => f(f(Math.log(f(Math.sqrt(a)))) - f(Math.log(f(Math.sqrt(f(1 - a)))))));
    const flipped = lambdas.reverse();
    let clipped = 0;   // torch.searchsorted(flipped, lmc): the first index whose value is >= lmc
    while (clipped < flipped.length && flipped[clipped] < lmc) clipped++;
    return this.config.num_train_timesteps - clipped;
  }

  setTimesteps(steps) {
    this.checkSteps(steps);
    const c = this.config;
    const last = this.lastTimestep();
    let ts;
    if (c.timestep_spacing === 'linspace') {
      ts = linspace(0, last - 1, steps + 1).map(roundHalfEven).reverse().slice(0, -1);
    } else if (c.timestep_spacing === 'leading') {
      const ratio = Math.floor(last / (steps + 1));
      ts = arange(0, steps + 1).map((i) => roundHalfEven(i * ratio)).reverse().slice(0, -1).map((t) => t + c.steps_offset);
    } else if (c.timestep_spacing === 'trailing') {
      const ratio = c.num_train_timesteps / steps;
      ts = arange(last, 0, -ratio).map((t) => roundHalfEven(t) - 1);
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
    this.numInferenceSteps = ts.length;
    this.modelOutputs = new Array(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  convertModelOutput(modelOutput, sample) {
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[this.stepIndex]);
    const n = sample.length;
    const x0 = new Float32Array(n);
    switch (this.config.prediction_type) {
      case 'epsilon':
        for (let i = 0; i < n; i++) x0[i] = f(f(sample[i] - f(sigmaT * modelOutput[i])) / alphaT);
        break;
      case 'v_prediction':
        for (let i = 0; i < n; i++) x0[i] = f(f(alphaT * sample[i]) - f(sigmaT * modelOutput[i]));
        break;
      case 'sample':
        x0.set(modelOutput);
        break;
      default:
        throw new SchedulerConfigError(`prediction_type ${this.config.prediction_type} is not supported`,
          'use epsilon, v_prediction or sample');
    }
    return x0;
  }

  firstOrderUpdate(m, sample) {
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[this.stepIndex + 1]);
    const [alphaS, sigmaS] = alphaSigma(this.sigmas[this.stepIndex]);
    const h = f(lambda(alphaT, sigmaT) - lambda(alphaS, sigmaS));
    const c1 = f(sigmaT / sigmaS);
    const c2 = f(alphaT * f(f(Math.exp(-h)) - 1));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) out[i] = f(f(c1 * sample[i]) - f(c2 * m[i]));
    return out;
  }

  secondOrderUpdate(sample) {
    const k = this.stepIndex;
    const [alphaT, sigmaT] = alphaSigma(this.sigmas[k + 1]);
    const [alphaS0, sigmaS0] = alphaSigma(this.sigmas[k]);
    const [alphaS1, sigmaS1] = alphaSigma(this.sigmas[k - 1]);
    const lambdaT = lambda(alphaT, sigmaT);
    const lambdaS0 = lambda(alphaS0, sigmaS0);
    const lambdaS1 = lambda(alphaS1, sigmaS1);
    const m0 = this.modelOutputs[this.modelOutputs.length - 1];
    const m1 = this.modelOutputs[this.modelOutputs.length - 2];
    const h = f(lambdaT - lambdaS0);
    const h0 = f(lambdaS0 - lambdaS1);
    const r0 = f(h0 / h);
    const invR0 = f(1 / r0);
    const c1 = f(sigmaT / sigmaS0);
    const expm1 = f(f(Math.exp(-h)) - 1);
    const c2 = f(alphaT * expm1);
    const out = new Float32Array(sample.length);
    if (this.config.solver_type === 'midpoint') {
      const c3 = f(0.5 * c2);
      for (let i = 0; i < out.length; i++) {
        const d1 = f(invR0 * f(m0[i] - m1[i]));
        out[i] = f(f(f(c1 * sample[i]) - f(c2 * m0[i])) - f(c3 * d1));
      }
    } else {   // heun
      const c3 = f(alphaT * f(f(expm1 / h) + 1));
      for (let i = 0; i < out.length; i++) {
        const d1 = f(invR0 * f(m0[i] - m1[i]));
        out[i] = f(f(f(c1 * sample[i]) - f(c2 * m0[i])) + f(c3 * d1));
      }
    }
    return out;
  }

  step(modelOutput, t, sample) {
    this.initStepIndex(t);
    const c = this.config;
    const n = this.timesteps.length;
    const lowerOrderFinal = this.stepIndex === n - 1
      && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === 'zero');
    const x0 = this.convertModelOutput(modelOutput, sample);
    for (let i = 0; i < c.solver_order - 1; i++) this.modelOutputs[i] = this.modelOutputs[i + 1];
    this.modelOutputs[this.modelOutputs.length - 1] = x0;
    const prev = (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal)
      ? this.firstOrderUpdate(x0, sample)
      : this.secondOrderUpdate(sample);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this.stepIndex += 1;
    return prev;
  }
}
