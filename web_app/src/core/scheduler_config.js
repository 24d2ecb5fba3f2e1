// A bundle's scheduler_config.json is a raw diffusers config (for SD 1.x a PNDMScheduler's). Like diffusers'
// from_config, each scheduler takes the keys it knows from it and its own defaults for the rest (the
// defaults below are diffusers 0.42's __init__ defaults; the golden vectors' resolved_configs check them).

import { DDIMScheduler } from './ddim_scheduler.js';
import { DPMSolverMultistepScheduler } from './dpm_solver_multistep_scheduler.js';
import { EulerDiscreteScheduler } from './euler_discrete_scheduler.js';
import { LCMScheduler } from './lcm_scheduler.js';
import { SchedulerConfigError } from './scheduler_config_error.js';

const COMMON = {
  num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, beta_schedule: 'linear', trained_betas: null,
  prediction_type: 'epsilon', rescale_betas_zero_snr: false,
};

export const SCHEDULERS = {
  dpm: {
    type: DPMSolverMultistepScheduler,
    defaults: {
      ...COMMON, solver_order: 2, thresholding: false, dynamic_thresholding_ratio: 0.995, sample_max_value: 1.0,
      algorithm_type: 'dpmsolver++', solver_type: 'midpoint', lower_order_final: true, euler_at_final: false,
      use_karras_sigmas: false, use_exponential_sigmas: false, use_beta_sigmas: false, use_lu_lambdas: false,
      use_flow_sigmas: false, flow_shift: 1.0, final_sigmas_type: 'zero', lambda_min_clipped: -Infinity,
      variance_type: null, timestep_spacing: 'linspace', steps_offset: 0, use_dynamic_shifting: false,
      time_shift_type: 'exponential',
    },
  },
  euler: {
    type: EulerDiscreteScheduler,
    defaults: {
      ...COMMON, interpolation_type: 'linear', use_karras_sigmas: false, use_exponential_sigmas: false,
      use_beta_sigmas: false, sigma_min: null, sigma_max: null, timestep_spacing: 'linspace',
      timestep_type: 'discrete', steps_offset: 0, final_sigmas_type: 'zero',
    },
  },
  ddim: {
    type: DDIMScheduler,
    defaults: {
      ...COMMON, clip_sample: true, set_alpha_to_one: true, steps_offset: 0, thresholding: false,
      dynamic_thresholding_ratio: 0.995, clip_sample_range: 1.0, sample_max_value: 1.0, timestep_spacing: 'leading',
    },
  },
  lcm: {
    type: LCMScheduler,
    defaults: {
      ...COMMON, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', original_inference_steps: 50,
      clip_sample: false, clip_sample_range: 1.0, set_alpha_to_one: true, steps_offset: 0, thresholding: false,
      dynamic_thresholding_ratio: 0.995, sample_max_value: 1.0, timestep_spacing: 'leading', timestep_scaling: 10.0,
    },
  },
};

export const SCHEDULER_NAMES = Object.keys(SCHEDULERS);

/** The config a scheduler runs with: its defaults, overridden by the keys of `raw` it knows. */
export function resolveConfig(name, raw, overrides = {}) {
  const entry = SCHEDULERS[name];
  if (!entry) {
    throw new SchedulerConfigError(`unknown scheduler ${JSON.stringify(name)}`, `use one of ${SCHEDULER_NAMES.join(', ')}`);
  }
  const config = { ...entry.defaults };
  for (const [k, v] of Object.entries({ ...raw, ...overrides })) {
    if (k in config) config[k] = v;
  }
  return config;
}

/**
 * A scheduler for a bundle: `name` one of the manifest's scheduler.supported, `raw` its scheduler_config.json,
 * `timestepSpacing` the manifest's scheduler.timestep_spacing (overrides the config's when present).
 */
export function makeScheduler(name, raw, { timestepSpacing } = {}) {
  const overrides = timestepSpacing ? { timestep_spacing: timestepSpacing } : {};
  const config = resolveConfig(name, raw, overrides);
  return new SCHEDULERS[name].type(config);
}
