// The latency report of a benchmark run (docs/latency-report.md, mobilesd/latency/latency_report.schema.json):
// warm-up runs first, then `repeats` timed generations; every stage's samples, medians and spread, and a
// per-step timeline. A browser report says what it is: measured_by kind "browser", the user agent, the
// WebGPU adapter, and a label and notes that name software WebGPU so nobody reads it as a phone figure.

export const SCHEMA_VERSION = '1.1';

function stats(samples, callsPerRun) {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  const mean = samples.reduce((a, b) => a + b, 0) / n;
  const variance = n > 1 ? samples.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1) : 0;
  const p90 = sorted[Math.min(n - 1, Math.ceil(0.9 * n) - 1)];
  const out = { median_s: median, samples_s: samples, min_s: sorted[0], max_s: sorted[n - 1], mean_s: mean,
    stdev_s: Math.sqrt(variance), p90_s: p90 };
  if (callsPerRun) out.calls_per_run = callsPerRun;
  return out;
}

function median(values) {
  return stats(values).median_s;
}

/** Short label for plots: what ran, and that software WebGPU is not a phone GPU. */
export function runtimeLabel(accelerator, adapter) {
  if (accelerator === 'wasm') return 'Chromium / LiteRT.js WASM (XNNPACK, CPU)';
  if (adapter?.software) return `Chromium / software WebGPU (${adapter.architecture || 'swiftshader'})`;
  return `Chromium / WebGPU (${[adapter?.vendor, adapter?.architecture].filter(Boolean).join(' ') || 'GPU'})`.slice(0, 80);
}

/**
 * @param {object} p
 * @param {Array<import('./sample_timer.js').SampleTimer>} p.timers the timed runs (warm-ups excluded)
 * @param {object} p.settings pipeline settings (prompt, steps, guidance, seed, scheduler, cfgMode)
 * @param {object} p.bundle {id, manifestSha256, width, height}
 * @param {object} p.environment {accelerator, precision, adapter, userAgent, os, cpuThreads, liteRtVersion, tool}
 * @param {number} p.warmup
 * @param {number} p.loadSeconds compiling every graph (once)
 */
export function buildLatencyReport({ timers, settings, bundle, environment, warmup, loadSeconds, created = new Date() }) {
  const e = environment;
  const repeats = timers.length;
  if (repeats < 1) throw new Error('a latency report needs at least one timed run');
  const stages = {};
  if (loadSeconds != null) stages.load = stats([loadSeconds], 1);
  const names = new Set(timers.flatMap((t) => Object.keys(t.stages)));
  for (const name of names) {
    const samples = timers.flatMap((t) => t.stages[name] ?? []);
    const perRun = /^unet_(step|chunk_\d+)$/.test(name) ? settings.steps : 1;
    stages[name] = stats(samples, perRun);
  }
  const steps = [];
  for (let k = 0; k < settings.steps; k++) {
    const runs = timers.map((t) => t.steps[k]);
    const nChunks = Math.max(...runs.map((r) => r.chunks_s.length));
    const chunks = Array.from({ length: nChunks }, (_, i) => median(runs.map((r) => r.chunks_s[i] ?? 0)));
    steps.push({ index: k, seconds: median(runs.map((r) => r.seconds)), chunks_s: chunks });
  }
  const overhead = median(timers.flatMap((t) => t.steps.map((s) => s.overhead_s)));
  const stepMedian = stages.unet_step.median_s;
  const software = e.accelerator === 'webgpu' && e.adapter?.software;
  const what = e.accelerator === 'wasm' ? 'LiteRT.js on WASM (XNNPACK) on the desktop CPU'
    : software ? `LiteRT.js on software WebGPU (${e.adapter.architecture || 'swiftshader'}), i.e. on the desktop CPU`
      : 'LiteRT.js on WebGPU';
  const adapterName = e.adapter
    ? [e.adapter.vendor, e.adapter.architecture, e.adapter.description].filter(Boolean).join(' ') : 'none';
  return {
    schema_version: SCHEMA_VERSION,
    kind: 'measurement',
    created: created.toISOString(),
    label: runtimeLabel(e.accelerator, e.adapter),
    measured_by: { kind: 'browser', tool: e.tool, user_agent: e.userAgent },
    device: {
      name: `desktop browser (${e.os})`.slice(0, 80),
      os: e.os,
      accelerator: e.accelerator === 'webgpu' ? 'gpu' : 'cpu',
      accelerator_name: e.accelerator === 'webgpu'
        ? `${software ? 'software WebGPU: ' : 'WebGPU: '}${adapterName}` : 'CPU (WASM, XNNPACK)',
      ...(e.cpuThreads ? { cpu_threads: e.cpuThreads } : {}),
    },
    runtime: {
      name: e.accelerator === 'webgpu' ? 'webgpu' : 'tflite',
      version: e.liteRtVersion,
      delegate: e.accelerator === 'webgpu' ? 'gpu' : 'xnnpack',
      precision: e.accelerator === 'webgpu' ? e.precision : 'fp32',
    },
    bundle: { id: bundle.id, manifest_sha256: bundle.manifestSha256 },
    settings: {
      width: bundle.width, height: bundle.height, steps: settings.steps, cfg_mode: settings.cfgMode,
      guidance: settings.guidance, scheduler: settings.scheduler, batch_size: 1, seed: settings.seed, prompt: settings.prompt,
    },
    protocol: { warmup, repeats, clock: 'performance.now()', thermal: 'not controlled (desktop browser, no cool-down)' },
    stages,
    steps,
    memory: { peak_rss_bytes: null, peak_accelerator_bytes: null, note: 'not measurable from a web page' },
    target_s: 7,
    notes: `Browser client (web_app/, mobilesd serve) measured in ${e.userAgent.includes('Headless') ? 'headless ' : ''}`
      + `Chromium: ${what}. NOT a phone: these timings say nothing about a phone's GPU or NPU; op coverage and `
      + `numerics are what this run shows. Page overhead outside graph calls: median ${(overhead * 1000).toFixed(3)} ms `
      + `per step (${stepMedian > 0 ? ((100 * overhead) / stepMedian).toFixed(2) : '0'}% of the step). `
      + `Adapter: ${adapterName}.`,
  };
}
