// LiteRtRunner: the GraphRunner on LiteRT.js (browser only): compiles each .tflite for WebGPU or WASM
// (XNNPACK), feeds inputs by name and maps the file's outputs output_0.. to the manifest's outputs by position.
//
// Timing: `graphSeconds` of a call is model.run plus reading its outputs back to host memory (on WebGPU the
// read-back waits for the GPU to finish, so it is the graph's execution); creating the input tensors and
// copying the outputs into JS arrays is the page's own work and is counted outside it.

import { Tensor, getWebGpuDevice, loadAndCompile, loadLiteRt } from '@litertjs/core';
import { BundleError } from '../core/bundle_error.js';

let liteRtLoaded = null;

/** Load LiteRT.js's wasm once per page; `threads` (needs a cross-origin isolated page) picks its threaded build. */
export function initLiteRt(wasmDir, { threads = false } = {}) {
  if (!liteRtLoaded) {
    const useThreads = threads && Boolean(globalThis.crossOriginIsolated);
    liteRtLoaded = loadLiteRt(wasmDir, { threads: useThreads }).then(() => ({ threads: useThreads }));
  }
  return liteRtLoaded;
}

const now = () => performance.now() / 1000;

/** A graph output left in LiteRT.js memory (host wasm memory, or a GPU buffer on WebGPU); delete() frees it. */
export class DeviceTensor {
  constructor(tensor, shape) {
    this.device = this;
    this.tensor = tensor;
    this.shape = shape;
  }

  delete() {
    if (!this.tensor.deleted) this.tensor.delete();
  }
}
const count = (shape) => shape.reduce((a, b) => a * b, 1);

export function outputOrder(details) {
  // litert-torch names a graph's outputs output_0, output_1, ... in return order
  const index = (d) => Number((/(\d+)$/.exec(d.name) ?? [0, 0])[1]);
  return [...details].sort((a, b) => index(a) - index(b)).map((d) => d.name);
}

export class LiteRtRunner {
  /**
   * @param {{accelerator: 'webgpu'|'wasm', precision?: 'fp32'|'fp16', prewarm?: boolean}} options
   * prewarm (WebGPU default): run each graph once on zeros when it is loaded, since its first WebGPU run
   * compiles the shaders (seconds on SwiftShader); loading then costs that, and generation times do not.
   */
  constructor({ accelerator = 'webgpu', precision = 'fp32', prewarm = accelerator === 'webgpu' } = {}) {
    if (!['webgpu', 'wasm'].includes(accelerator)) throw new Error(`unknown accelerator ${accelerator}`);
    this.accelerator = accelerator;
    this.precision = precision;
    this.prewarm = prewarm;
    this.models = new Map();
    this.wasmFallbacks = [];   // graphs LiteRT.js could not fully place on WebGPU (they run on WASM)
    this.copiedInValues = 0;   // tensor elements copied from JS arrays into LiteRT.js (the page's copies)
  }

  compileOptions() {
    const options = { accelerator: this.accelerator };
    if (this.accelerator === 'webgpu') options.gpuOptions = { precision: this.precision };
    return options;
  }

  async load(name, bytes, graph) {
    let model;
    try {
      model = await loadAndCompile(new Uint8Array(bytes), this.compileOptions());
    } catch (err) {
      throw new BundleError(`LiteRT.js could not compile ${name} for ${this.accelerator}: ${err.message ?? err}`,
        this.accelerator === 'webgpu' ? 'choose the WASM accelerator, or re-export the bundle' : 're-export the bundle');
    }
    if (this.accelerator === 'webgpu' && !model.isFullyAccelerated) this.wasmFallbacks.push(name);
    const inputNames = new Set(model.getInputDetails().map((d) => d.name));
    const missing = graph.inputs.map((i) => i.name).filter((n) => !inputNames.has(n));
    const order = outputOrder(model.getOutputDetails());
    if (missing.length || order.length !== graph.outputs.length) {
      model.delete();
      throw new BundleError(`graph ${name} does not match its manifest entry (inputs ${[...inputNames]}, `
        + `${order.length} outputs; the manifest says inputs ${graph.inputs.map((i) => i.name)}, ${graph.outputs.length} outputs)`,
      're-export the bundle');
    }
    this.models.set(name, { model, graph, order });
    if (this.prewarm) {
      const zeros = {};
      for (const i of graph.inputs) {
        const Type = i.dtype === 'int32' ? Int32Array : Float32Array;
        zeros[i.name] = { data: new Type(count(i.shape)), shape: i.shape, dtype: i.dtype };
      }
      await this.run(name, zeros);
    }
  }

  unload(name) {
    const entry = this.models.get(name);
    if (entry) {
      entry.model.delete();
      this.models.delete(name);
    }
  }

  /**
   * inputs: {name: {data, shape, dtype} | {device: DeviceTensor}}; keep: per output, whether to leave it in
   * LiteRT.js memory (a DeviceTensor the next graph takes as it is: UNet chunks hand their tensors on without a
   * round trip through JS, on WebGPU without a GPU read-back) instead of reading it back into a Float32Array.
   * -> {outputs: [Float32Array | DeviceTensor] in manifest order, graphSeconds}
   */
  async run(name, inputs, { keep = [] } = {}) {
    const entry = this.models.get(name);
    if (!entry) throw new Error(`graph ${name} is not loaded`);
    const feeds = {};
    const owned = [];
    try {
      for (const spec of entry.graph.inputs) {
        const value = inputs[spec.name];
        if (value.device) {
          feeds[spec.name] = value.device.tensor;
          continue;
        }
        if (value.data.length !== count(spec.shape)) {
          throw new Error(`input ${spec.name} of ${name} has ${value.data.length} values, the graph takes ${spec.shape}`);
        }
        feeds[spec.name] = new Tensor(value.data, value.shape);
        owned.push(feeds[spec.name]);
        this.copiedInValues += value.data.length;
      }
      const t0 = now();
      const outputs = await this.execute(entry, feeds, keep);
      return { outputs, graphSeconds: now() - t0 };
    } finally {
      owned.forEach((t) => t.delete());
    }
  }

  /** The graph call: run the compiled model; read back the outputs not kept, in the manifest's order. */
  async execute(entry, feeds, keep) {
    const result = await entry.model.run(feeds);
    const out = [];
    const kept = new Set();
    try {
      for (const [k, key] of entry.order.entries()) {
        if (keep[k]) {
          out.push(new DeviceTensor(result[key], entry.graph.outputs[k].shape));
          kept.add(key);
        } else {
          out.push(await result[key].data());
        }
      }
      return out;
    } finally {
      for (const [key, t] of Object.entries(result)) if (!kept.has(key)) t.delete();
    }
  }

  deleteAll() {
    [...this.models.keys()].forEach((n) => this.unload(n));
  }
}

/** What the page can say about the WebGPU adapter (null without WebGPU). */
export async function webGpuAdapterInfo() {
  let info = null;
  try {
    info = getWebGpuDevice()?.adapterInfo ?? null;   // the device LiteRT.js runs on, once it is loaded
  } catch {
    info = null;                                     // LiteRT.js not loaded yet: ask the browser
  }
  if (!info && globalThis.navigator?.gpu) {
    const adapter = await navigator.gpu.requestAdapter();
    info = adapter?.info ?? null;
  }
  if (!info) return null;
  const out = {
    vendor: info.vendor || '', architecture: info.architecture || '', device: info.device || '',
    description: info.description || '', isFallbackAdapter: Boolean(info.isFallbackAdapter),
  };
  out.software = out.architecture.toLowerCase().includes('swiftshader') || out.isFallbackAdapter
    || /swiftshader|llvmpipe|lavapipe/i.test(out.description);
  return out;
}
