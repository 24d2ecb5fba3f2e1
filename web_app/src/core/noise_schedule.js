// The training noise schedule every diffusers scheduler builds in __init__, in float32 as torch computes it:
// betas (linear / scaled_linear / squaredcos_cap_v2 / trained), alphas = 1 - betas, alphas_cumprod (torch's
// CPU cumprod multiplies in float64 and stores float32), sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5.
//
// torch.linspace in float32 is followed by its scalar formula (start + step * i below halfway, end - step *
// (n - 1 - i) above); torch's vectorised kernel can differ in the last bit of a few betas, which moves
// alphas_cumprod by at most an ulp where it moves it at all (measured: 121 of 1000 values for SD's
// scaled_linear schedule, none below index 273), far inside the 2e-6 bound the clients are held to.

import { SchedulerConfigError } from './scheduler_config_error.js';

const f = Math.fround;

function linspaceF32(start, end, n) {
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (n - 1));
  const halfway = Math.floor(n / 2);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = i < halfway ? f(s + f(step * i)) : f(e - f(step * (n - i - 1)));
  return out;
}

function betasForAlphaBar(n, maxBeta = 0.999) {
  const alphaBar = (t) => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

export function betas(config) {
  const n = config.num_train_timesteps;
  if (config.trained_betas != null) return Float32Array.from(config.trained_betas);
  switch (config.beta_schedule) {
    case 'linear': return linspaceF32(config.beta_start, config.beta_end, n);
    case 'scaled_linear': return linspaceF32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), n).map((b) => f(b * b));
    case 'squaredcos_cap_v2': return betasForAlphaBar(n);
    default:
      throw new SchedulerConfigError(`beta_schedule ${JSON.stringify(config.beta_schedule)} is not supported`,
        'use linear, scaled_linear or squaredcos_cap_v2 (what diffusers implements)');
  }
}

export function alphasCumprod(config) {
  if (config.rescale_betas_zero_snr) {
    throw new SchedulerConfigError('rescale_betas_zero_snr is not supported by the web client',
      'export a model whose scheduler config does not rescale the betas');
  }
  const b = betas(config);
  const out = new Float32Array(b.length);
  let acc = 1;   // float64 accumulator, float32 stores (ATen's CPU cumprod)
  for (let i = 0; i < b.length; i++) {
    acc *= f(1 - b[i]);
    out[i] = acc;
  }
  return out;
}

/** ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5 in float32. */
export function trainingSigmas(ac) {
  return ac.map((a) => f(Math.sqrt(f(f(1 - a) / a))));
}
