// The export's LiteRT.js check (mobilesd/litert_js.py drives this page headless): compile one .tflite on an
// accelerator, run it on given inputs, hand the outputs back (base64 float32) for the Python side to compare
// with PyTorch. One page serves every graph of a bundle, so Chromium starts once per export.

import { loadAndCompile, Tensor } from '@litertjs/core';
import { initLiteRt, outputOrder, webGpuAdapterInfo } from '../runtime/litert_runner.js';

const WASM_DIR = new URL('../../node_modules/@litertjs/core/wasm/', import.meta.url).href;
const TYPES = { float32: Float32Array, int32: Int32Array };

function toBase64(typed) {
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function fetchBytes(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(`HTTP ${r.status} for ${url}`);
  return new Uint8Array(await r.arrayBuffer());
}

/**
 * spec: {graphUrl, accelerator: 'webgpu'|'wasm', precision: 'fp32'|'fp16', run: bool,
 *        inputs: [{name, url, dtype, shape}]}
 * -> {compiled, fullyAccelerated, error, compileSeconds, runSeconds, outputs: [{name, b64}]}
 */
async function checkGraph(spec) {
  await initLiteRt(WASM_DIR);
  const out = { compiled: false, fullyAccelerated: false, error: null, outputs: [], compileSeconds: null, runSeconds: null };
  let model;
  const t0 = performance.now();
  try {
    const options = { accelerator: spec.accelerator };
    if (spec.accelerator === 'webgpu') options.gpuOptions = { precision: spec.precision };
    model = await loadAndCompile(await fetchBytes(spec.graphUrl), options);
    out.compiled = true;
    out.fullyAccelerated = spec.accelerator === 'wasm' ? true : model.isFullyAccelerated;
  } catch (err) {
    out.error = `compile failed: ${err?.message ?? err}`;
    return out;
  } finally {
    out.compileSeconds = (performance.now() - t0) / 1000;
  }
  const feeds = {};
  try {
    if (!spec.run || !out.fullyAccelerated) return out;
    const names = new Set(model.getInputDetails().map((d) => d.name));
    for (const input of spec.inputs) {
      if (!names.has(input.name)) throw new Error(`the graph has no input ${input.name} (it has ${[...names]})`);
      const bytes = await fetchBytes(input.url);
      const Type = TYPES[input.dtype];
      const data = new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
      feeds[input.name] = new Tensor(data, input.shape);
    }
    const t1 = performance.now();
    const result = await model.run(feeds);
    try {
      for (const key of outputOrder(model.getOutputDetails())) out.outputs.push({ name: key, b64: toBase64(await result[key].data()) });
    } finally {
      Object.values(result).forEach((t) => t.delete());
    }
    out.runSeconds = (performance.now() - t1) / 1000;
  } catch (err) {
    out.error = `run failed: ${err?.message ?? err}`;
  } finally {
    Object.values(feeds).forEach((t) => t.delete());
    model.delete();
  }
  return out;
}

window.checkGraph = checkGraph;
window.adapterInfo = webGpuAdapterInfo;
document.body.dataset.state = 'ready';
