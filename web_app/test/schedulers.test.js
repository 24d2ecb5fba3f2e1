import test from 'node:test';
import assert from 'node:assert/strict';
import { section, array, slice, relL2 } from './golden.js';
import { makeScheduler, resolveConfig } from '../src/core/scheduler_config.js';
import { TorchRandomSource } from '../src/core/torch_random_source.js';

const golden = section('schedulers');
const TOL = 2e-6;

test('resolved configs match diffusers from_config (defaults filled in)', () => {
  for (const [key, want] of Object.entries(golden.resolved_configs)) {
    const [cfgName, name] = key.split('/');
    const got = resolveConfig(name, golden.configs[cfgName]);
    const nonfinite = { inf: Infinity, '-inf': -Infinity };
    for (const [k, v] of Object.entries(got)) {
      const expected = k in want.config ? want.config[k] : nonfinite[want.nonfinite[k]];
      assert.deepEqual(v, expected, `${key}: ${k}`);
    }
  }
});

for (const c of golden.cases) {
  test(`scheduler ${c.scheduler} / ${c.config} / ${c.steps} steps: timesteps exact, steps within ${TOL}`, () => {
    const s = makeScheduler(c.scheduler, golden.configs[c.config]);
    s.setTimesteps(c.steps);
    assert.deepEqual(s.timesteps, c.timesteps, 'timesteps');
    if (c.sigmas !== null) assert.ok(relL2(s.sigmas, c.sigmas) <= TOL, `sigmas rel. L2 ${relL2(s.sigmas, c.sigmas)}`);
    assert.ok(Math.abs(s.initNoiseSigma - c.init_noise_sigma) <= TOL * c.init_noise_sigma, 'init_noise_sigma');
    const samples = array(c.samples);
    const outputs = array(c.model_outputs);
    const scaled = array(c.scaled_model_inputs);
    const shape = c.samples.shape;
    const random = new TorchRandomSource(c.noise_seed);
    const noise = random.normalArray(golden.shape);
    let x = noise.map((v) => Math.fround(v * s.initNoiseSigma));
    assert.ok(relL2(x, slice(samples, shape, 0)) <= TOL, 'initial sample');
    s.timesteps.forEach((t, k) => {
      const scaledGot = s.scaleModelInput(x, t);
      const e1 = relL2(scaledGot, slice(scaled, c.scaled_model_inputs.shape, k));
      assert.ok(e1 <= TOL, `step ${k}: scaled model input rel. L2 ${e1}`);
      // each step starts from the reference sample, so one step's error does not carry into the next
      x = s.step(slice(outputs, c.model_outputs.shape, k), t, slice(samples, shape, k), random);
      const e2 = relL2(x, slice(samples, shape, k + 1));
      assert.ok(e2 <= TOL, `step ${k} (t=${t}): sample rel. L2 ${e2}`);
    });
  });
}

test('unknown scheduler and unsupported configs are refused with a message', () => {
  assert.throws(() => makeScheduler('pndm', golden.configs.sd_epsilon), /unknown scheduler "pndm".*dpm, euler, ddim, lcm/);
  assert.throws(() => makeScheduler('dpm', { ...golden.configs.sd_epsilon, use_karras_sigmas: true }), /karras/);
  assert.throws(() => makeScheduler('euler', { ...golden.configs.sd_epsilon, rescale_betas_zero_snr: true }), /rescale_betas_zero_snr/);
  const lcm = makeScheduler('lcm', golden.configs.sd_epsilon);
  assert.throws(() => lcm.setTimesteps(51), /at most 50 steps/);
  assert.throws(() => lcm.setTimesteps(0), /at least 1/);
});

test('manifest timestep_spacing overrides the config for every scheduler but LCM', () => {
  for (const name of ['dpm', 'euler', 'ddim']) {
    const s = makeScheduler(name, golden.configs.sd_epsilon, { timestepSpacing: 'trailing' });
    s.setTimesteps(4);
    const ref = makeScheduler(name, golden.configs.sd_epsilon_trailing);
    ref.setTimesteps(4);
    assert.deepEqual(s.timesteps, ref.timesteps, name);
  }
});
