// The page's latency report (Benchmark button) against the repository's report schema
// (mobilesd/latency/latency_report.schema.json, ajv), built from real SampleTimer runs.

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import { REPO } from './golden.js';
import { buildLatencyReport, runtimeLabel } from '../src/core/latency_report.js';
import { SampleTimer } from '../src/core/sample_timer.js';

const schema = JSON.parse(fs.readFileSync(path.join(REPO, 'mobilesd', 'latency', 'latency_report.schema.json'), 'utf8'));
const validate = new Ajv2020({ strict: false, allErrors: true }).compile(schema);

async function timedRun(steps, chunks) {
  const timer = new SampleTimer();
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  await timer.time('text_encoder', () => wait(2));
  for (let k = 0; k < steps; k++) {
    timer.beginStep();
    for (let c = 0; c < chunks; c++) {
      const t0 = SampleTimer.now();
      await wait(1);
      timer.chunk(c, SampleTimer.now() - t0, (SampleTimer.now() - t0) * 0.9);
    }
    timer.endStep();
  }
  await timer.time('vae_decoder', () => wait(2));
  timer.add('end_to_end', 0.05);
  return timer;
}

const environment = {
  accelerator: 'webgpu', precision: 'fp32', userAgent: 'Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0',
  os: 'Linux x86_64', cpuThreads: 2, liteRtVersion: 'LiteRT.js 2.5.3', tool: 'mobilesd web client 0.1.0',
  adapter: { vendor: 'google', architecture: 'swiftshader', device: '', description: '', software: true },
};

test('the benchmark report validates against the latency-report schema and says software WebGPU', async () => {
  const timers = [await timedRun(4, 3), await timedRun(4, 3)];
  const report = buildLatencyReport({
    timers, warmup: 1, loadSeconds: 1.5, environment,
    settings: { prompt: 'a digit', steps: 4, guidance: 7.5, seed: 0, scheduler: 'dpm', cfgMode: 'batch' },
    bundle: { id: 'web-0123456789abcdef', manifestSha256: 'a'.repeat(64), width: 32, height: 32 },
  });
  assert.ok(validate(report), (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`).join('; '));
  assert.equal(report.measured_by.kind, 'browser');
  assert.match(report.label, /software WebGPU \(swiftshader\)/);
  assert.match(report.notes, /NOT a phone/);
  assert.equal(report.stages.unet_step.samples_s.length, 8);
  assert.equal(report.stages.unet_chunk_2.calls_per_run, 4);
  assert.equal(report.steps.length, 4);
  assert.equal(report.steps[0].chunks_s.length, 3);
  assert.equal(report.device.accelerator, 'gpu');
});

test('labels name what ran', () => {
  assert.equal(runtimeLabel('wasm', null), 'Chromium / LiteRT.js WASM (XNNPACK, CPU)');
  assert.equal(runtimeLabel('webgpu', { vendor: 'nvidia', architecture: 'ampere', software: false }), 'Chromium / WebGPU (nvidia ampere)');
});
