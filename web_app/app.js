// The page: a thin screen over the client core (src/core/) and the LiteRT.js runner (src/runtime/).
// It loads a bundle (from the server, or a folder picked on disk), verifies every file's SHA-256 before any
// graph runs, generates on WebGPU or WASM, shows per-stage times, and writes a latency report on Benchmark.
// `window.mobilesdApp` exposes the state to drivers (mobilesd app web, the tests): `state` mirrors
// document.body.dataset.state (starting | no-bundle | verifying | ready | loading-graphs | running | done | error).

import { BPETokenizer } from './src/core/bpe_tokenizer.js';
import { BundleError } from './src/core/bundle_error.js';
import { BundleManifest, sha256Hex } from './src/core/bundle_manifest.js';
import { buildLatencyReport, runtimeLabel } from './src/core/latency_report.js';
import { StableDiffusionPipeline } from './src/core/pipeline.js';
import { ResourceManager } from './src/core/resource_manager.js';
import { SampleTimer } from './src/core/sample_timer.js';
import { DirectoryHandleSource, FileListSource, HttpBundleSource } from './src/platform/bundle_sources.js';
import { LiteRtRunner, initLiteRt, webGpuAdapterInfo } from './src/runtime/litert_runner.js';

const WASM_DIR = new URL('./node_modules/@litertjs/core/wasm/', import.meta.url).href;
// LiteRT.js's threaded wasm (1.7x faster here) is used unless the page is opened with ?threads=0. It hangs the
// page when a graph is compiled after others were deleted (seen with per-stage loading of a chunked bundle), so
// per-stage loading ("reduce memory") needs ?threads=0.
const THREADS = new URLSearchParams(location.search).get('threads') !== '0';
const $ = (id) => document.getElementById(id);

const app = {
  state: 'starting',
  bundle: null,          // {manifest: BundleManifest, files, tokenizer, schedulerConfig, sha256, source}
  engine: null,          // {key, runner, resources, pipeline, loadSeconds}
  adapter: null,
  versions: { litert: 'LiteRT.js', client: 'mobilesd web client' },
  lastResult: null,
  lastReport: null,
  error: null,
};
window.mobilesdApp = app;

function setState(state) {
  app.state = state;
  document.body.dataset.state = state;
  const busy = ['starting', 'verifying', 'loading-graphs', 'running'].includes(state);
  const ready = app.bundle && !busy;
  $('generate').disabled = !ready;
  $('benchmark').disabled = !ready;
  $('load-server').disabled = busy;
  $('open-folder').disabled = busy;
}

function showError(err) {
  app.error = err?.problem ? `${err.problem}${err.fix ? `\nFix: ${err.fix}` : ''}` : String(err?.message ?? err);
  $('error').textContent = app.error;
  $('error').hidden = false;
  console.error(err);
  setState('error');
}

function clearError() {
  app.error = null;
  $('error').hidden = true;
}

function progress(id, fraction) {
  const bar = $(id);
  bar.hidden = fraction === null;
  if (fraction !== null) bar.firstElementChild.style.width = `${Math.round(100 * fraction)}%`;
}

async function fetchVersion(path, fallback) {
  try {
    const pkg = await (await fetch(path, { cache: 'no-store' })).json();
    return `${fallback} ${pkg.version}`;
  } catch {
    return fallback;
  }
}

// ---- bundle -------------------------------------------------------------------------------------------

async function loadBundle(source) {
  clearError();
  app.bundle = null;
  disposeEngine();
  setState('verifying');
  $('bundle-status').textContent = `Reading ${source.label}…`;
  try {
    const manifestBytes = await source.readBytes('manifest.json').catch((err) => {
      throw Object.assign(new Error(`no manifest.json in ${source.label} (${err.message})`),
        { problem: `no manifest.json in ${source.label}`, fix: 'pick a folder written by `mobilesd export --target web`' });
    });
    const manifest = BundleManifest.parse(manifestBytes);   // format, version, graphs: refused here with a message
    const m = manifest.manifest;
    const needed = new Set([...m.graphs.map((g) => g.file), m.tokenizer.vocab, m.tokenizer.merges, m.scheduler.config]);
    const files = await manifest.verifyFiles(source, {
      keep: (rel) => needed.has(rel),
      onProgress: (done, total, rel) => {
        progress('progress-files', done / total);
        $('bundle-status').textContent = `Verifying SHA-256 ${done}/${total}: ${rel}`;
      },
    });
    const text = (rel) => new TextDecoder().decode(files.get(rel));
    app.bundle = {
      manifest, files, source,
      tokenizer: BPETokenizer.fromBundle(m.tokenizer, text(m.tokenizer.vocab), text(m.tokenizer.merges)),
      schedulerConfig: JSON.parse(text(m.scheduler.config)),
      sha256: await sha256Hex(manifestBytes),
    };
    const sel = $('scheduler');
    sel.replaceChildren(...m.scheduler.supported.map((s) => new Option(s, s, s === m.scheduler.default, s === m.scheduler.default)));
    $('guidance').value = m.cfg.default_guidance;
    $('negative-prompt').value = m.cfg.negative_prompt_default ?? '';
    $('bundle-status').textContent = `${m.bundle_id} (${m.target}, ${m.precision}, ${m.image.width}x${m.image.height}, `
      + `${m.unet.chunks.length} UNet graph${m.unet.chunks.length > 1 ? 's' : ''}, cfg ${m.cfg.mode}) from ${source.label}: `
      + `${Object.keys(m.files).length} files verified (SHA-256)`;
    progress('progress-files', null);
    setState('ready');
  } catch (err) {
    progress('progress-files', null);
    $('bundle-status').textContent = `Bundle refused (${source.label}); nothing was run.`;
    showError(err);
  }
}

// ---- engine: runner + resources for the chosen accelerator ---------------------------------------------

function chosenEngineOptions() {
  return {
    accelerator: document.querySelector('input[name=accelerator]:checked').value,
    precision: $('precision').value,
    reduceMemory: $('reduce-memory').checked,
  };
}

function disposeEngine() {
  if (app.engine) {
    app.engine.resources.unloadAll();
    app.engine = null;
  }
}

async function ensureEngine() {
  const opts = chosenEngineOptions();
  const key = JSON.stringify(opts);
  if (app.engine?.key === key) return app.engine;
  disposeEngine();
  setState('loading-graphs');
  $('result-status').textContent = `Compiling graphs for ${opts.accelerator}…`;
  const { threads } = await initLiteRt(WASM_DIR, { threads: THREADS });
  if (opts.reduceMemory && threads) {
    throw new BundleError('loading graphs per stage needs LiteRT.js\'s single-threaded build (its threaded build hangs '
      + 'when it compiles a graph after others were deleted)', 'open the page with ?threads=0 added to its address');
  }
  // prewarm (WebGPU's first runs compile shaders) once per load; per-stage loading pays it at every stage anyway
  const runner = new LiteRtRunner({ ...opts, prewarm: opts.accelerator === 'webgpu' && !opts.reduceMemory });
  const resources = new ResourceManager(app.bundle.manifest, app.bundle.files, runner, { reduceMemory: opts.reduceMemory });
  await resources.prepare();
  const pipeline = new StableDiffusionPipeline(resources, app.bundle.tokenizer, app.bundle.schedulerConfig);
  app.engine = { key, opts, runner, resources, pipeline, loadSeconds: resources.loadSeconds };
  return app.engine;
}

// ---- generation --------------------------------------------------------------------------------------

function formSettings() {
  const num = (id) => Number($(id).value);
  return {
    prompt: $('prompt').value, negativePrompt: $('negative-prompt').value, steps: num('steps'),
    guidance: num('guidance'), seed: num('seed'), scheduler: $('scheduler').value,
  };
}

function draw(result) {
  const canvas = $('canvas');
  canvas.width = result.width;
  canvas.height = result.height;
  const ctx = canvas.getContext('2d');
  const rgba = new ImageData(result.width, result.height);
  for (let i = 0, j = 0; i < result.image.length; i += 3, j += 4) {
    rgba.data[j] = result.image[i];
    rgba.data[j + 1] = result.image[i + 1];
    rgba.data[j + 2] = result.image[i + 2];
    rgba.data[j + 3] = 255;
  }
  ctx.putImageData(rgba, 0, 0);
}

function showTimings(timer, loadSeconds) {
  const s = timer.summary();
  const rows = [['load (compile graphs, first WebGPU runs)', loadSeconds]];
  rows.push(['text encoder', s.text_encoder]);
  const steps = timer.steps.length;
  rows.push([`UNet step (median of ${steps})`, median(timer.stages.unet_step)]);
  for (const k of Object.keys(timer.stages).filter((n) => n.startsWith('unet_chunk_')).sort()) {
    rows.push([`  ${k.replace('unet_', '')} (median)`, median(timer.stages[k])]);
  }
  rows.push(['  page overhead per step', s.overhead_per_step_s]);
  rows.push(['VAE decoder', s.vae_decoder]);
  rows.push(['end to end', s.end_to_end]);
  $('timings').tBodies[0].replaceChildren(...rows.map(([name, v]) => {
    const tr = document.createElement('tr');
    tr.innerHTML = `<td></td><td class="num"></td>`;
    tr.cells[0].textContent = name;
    tr.cells[1].textContent = v == null ? '–' : `${(v * 1000).toFixed(v < 0.01 ? 3 : 1)} ms`;
    return tr;
  }));
}

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function runOnce(engine, settings, label) {
  const timer = new SampleTimer();
  const res = await engine.pipeline.generate(settings, {
    timer,
    onStep: (k, n) => {
      progress('progress-steps', k / n);
      $('result-status').textContent = `${label}: step ${k}/${n}`;
    },
  });
  return res;
}

function publish(res, engine) {
  draw(res);
  showTimings(res.timer, engine.loadSeconds);
  const fallback = engine.runner.wasmFallbacks.length ? ` (on WASM: ${engine.runner.wasmFallbacks.join(', ')})` : '';
  $('result-status').textContent = `${res.settings.scheduler}, ${res.settings.steps} steps, guidance ${res.settings.guidance}, `
    + `seed ${res.settings.seed}, cfg ${res.settings.cfgMode} on ${runtimeLabel(engine.opts.accelerator, app.adapter)}${fallback}`;
  app.lastResult = {
    width: res.width, height: res.height, image: Array.from(res.image), settings: res.settings,
    accelerator: engine.opts.accelerator, precision: engine.opts.precision, wasmFallbacks: engine.runner.wasmFallbacks,
    timings: res.timer.summary(), stages: res.timer.stages, steps: res.timer.steps, loadSeconds: engine.loadSeconds,
  };
}

async function generate() {
  clearError();
  try {
    const engine = await ensureEngine();
    setState('running');
    const res = await runOnce(engine, formSettings(), 'generating');
    progress('progress-steps', null);
    publish(res, engine);
    setState('done');
  } catch (err) {
    progress('progress-steps', null);
    showError(err);
  }
}

function environment(engine) {
  const ua = navigator.userAgent;
  const os = (/\(([^;)]*(?:Linux|Windows|Mac OS X|Android|CrOS)[^)]*)\)/.exec(ua)?.[1] ?? navigator.platform ?? 'unknown')
    .replace(/^X11; /, '');
  return {
    accelerator: engine.opts.accelerator, precision: engine.opts.precision, adapter: app.adapter, userAgent: ua,
    os, cpuThreads: navigator.hardwareConcurrency || undefined, liteRtVersion: app.versions.litert, tool: app.versions.client,
  };
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const a = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function benchmark() {
  clearError();
  try {
    const engine = await ensureEngine();
    setState('running');
    const settings = formSettings();
    const warmup = Math.max(0, Math.floor(Number($('warmup').value)));
    const repeats = Math.max(1, Math.floor(Number($('repeats').value)));
    let last;
    for (let i = 0; i < warmup; i++) last = await runOnce(engine, settings, `warm-up ${i + 1}/${warmup}`);
    const timers = [];
    for (let i = 0; i < repeats; i++) {
      last = await runOnce(engine, settings, `timed run ${i + 1}/${repeats}`);
      timers.push(last.timer);
    }
    progress('progress-steps', null);
    publish(last, engine);
    const m = app.bundle.manifest.manifest;
    const report = buildLatencyReport({
      timers, settings: last.settings, warmup, loadSeconds: engine.loadSeconds, environment: environment(engine),
      bundle: { id: m.bundle_id, manifestSha256: app.bundle.sha256, width: m.image.width, height: m.image.height },
    });
    app.lastReport = report;
    download(`latency-${m.bundle_id}-${engine.opts.accelerator}.json`, `${JSON.stringify(report, null, 2)}\n`);
    $('result-status').textContent += ` — latency report downloaded (${repeats} runs after ${warmup} warm-up)`;
    setState('done');
  } catch (err) {
    progress('progress-steps', null);
    showError(err);
  }
}

// ---- start ---------------------------------------------------------------------------------------------

async function pickFolder() {
  if (window.showDirectoryPicker) {
    try {
      const handle = await window.showDirectoryPicker({ id: 'mobilesd-bundle', mode: 'read' });
      await loadBundle(new DirectoryHandleSource(handle));
    } catch (err) {
      if (err?.name !== 'AbortError') showError(err);
    }
  } else {
    $('folder-input').click();
  }
}

async function start() {
  $('form').addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  $('benchmark').addEventListener('click', benchmark);
  $('open-folder').addEventListener('click', pickFolder);
  $('folder-input').addEventListener('change', (e) => {
    if (e.target.files.length) loadBundle(new FileListSource(e.target.files));
  });
  const params = new URLSearchParams(location.search);
  const serverBundle = params.get('bundle') ?? 'bundle/';
  $('load-server').addEventListener('click', () => loadBundle(new HttpBundleSource(serverBundle)));
  [app.versions.litert, app.versions.client] = await Promise.all([
    fetchVersion('./node_modules/@litertjs/core/package.json', 'LiteRT.js'),
    fetchVersion('./package.json', 'mobilesd web client'),
  ]);
  app.adapter = await webGpuAdapterInfo().catch(() => null);
  const a = app.adapter;
  const adapterText = !a ? 'No WebGPU in this browser: use the WASM accelerator.'
    : `WebGPU adapter: ${[a.vendor, a.architecture, a.description].filter(Boolean).join(' ') || 'unknown'}`
      + (a.software ? ' — software WebGPU (swiftshader): timings are this desktop\'s CPU, not a phone GPU' : '');
  $('adapter').textContent = adapterText;
  $('adapter').classList.toggle('software', Boolean(a?.software));
  if (!a) document.querySelector('input[name=accelerator][value=wasm]').checked = true;
  // 'no-bundle' only once the probe has failed: set before it, a caller waiting for a settled state saw
  // 'no-bundle' while a served bundle was still being probed (seen in CI on a loaded machine)
  const probe = await fetch(new URL('manifest.json', new URL(serverBundle, location.href)), { method: 'HEAD', cache: 'no-store' })
    .catch(() => null);
  if (probe?.ok) {
    await loadBundle(new HttpBundleSource(serverBundle));
  } else {
    $('load-server').disabled = true;
    setState('no-bundle');
  }
}

start().catch(showError);
