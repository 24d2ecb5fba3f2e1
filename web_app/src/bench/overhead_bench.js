// The page's own cost per denoising step (benchmarks/web_overhead.py): StableDiffusionPipeline with the
// SyntheticRunner on a manifest with SD1.5's tensor shapes (1x4x64x64 latent, 3 UNet chunks), so what is
// timed is the scheduler, CFG, tensor copies into LiteRT.js and the chunk bookkeeping, not the graphs.

import { BPETokenizer } from '../core/bpe_tokenizer.js';
import { BundleManifest } from '../core/bundle_manifest.js';
import { StableDiffusionPipeline } from '../core/pipeline.js';
import { ResourceManager } from '../core/resource_manager.js';
import { SampleTimer } from '../core/sample_timer.js';
import { initLiteRt } from '../runtime/litert_runner.js';
import { SyntheticRunner } from '../runtime/synthetic_runner.js';

const WASM_DIR = new URL('../../node_modules/@litertjs/core/wasm/', import.meta.url).href;

async function text(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
  return r.text();
}

/** spec: {manifest, schedulerConfig, vocabUrl, mergesUrl, settings, warmup, repeats} -> per-step timings */
async function runOverheadBench(spec) {
  await initLiteRt(WASM_DIR);
  const bundle = new BundleManifest(spec.manifest);
  const files = new Map(spec.manifest.graphs.map((g) => [g.file, new Uint8Array(0)]));
  const runner = new SyntheticRunner();
  const resources = new ResourceManager(bundle, files, runner);
  await resources.prepare();
  const tokenizer = BPETokenizer.fromBundle(spec.manifest.tokenizer, await text(spec.vocabUrl), await text(spec.mergesUrl));
  const pipeline = new StableDiffusionPipeline(resources, tokenizer, spec.schedulerConfig);
  const runs = [];
  const count = (g) => g.inputs.reduce((n, i) => n + i.shape.reduce((a, b) => a * b, 1), 0);
  const outsideSteps = count(bundle.textEncoder) * 2 + count(bundle.decoder);   // prompt + negative, the latent
  let copiedPerStep = null;
  for (let i = 0; i < spec.warmup + spec.repeats; i++) {
    const timer = new SampleTimer();
    const before = runner.copiedInValues;
    await pipeline.generate(spec.settings, { timer });
    copiedPerStep = (runner.copiedInValues - before - outsideSteps) / timer.steps.length;
    if (i >= spec.warmup) runs.push(timer.steps.map((s) => ({ seconds: s.seconds, graph_s: s.graph_s, overhead_s: s.overhead_s })));
  }
  return { runs, copiedPerStep, userAgent: navigator.userAgent };
}

window.runOverheadBench = runOverheadBench;
document.body.dataset.state = 'ready';
