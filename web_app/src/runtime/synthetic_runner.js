// SyntheticRunner: LiteRtRunner without graphs, for the overhead benchmark (benchmarks/web_overhead.py).
//
// Everything the page does around a graph call is real (input tensors copied into LiteRT.js's wasm memory,
// the chunk dictionary, CFG, the scheduler); the call itself returns zero-filled outputs of the manifest's
// shapes at once (outputs a graph call would leave in LiteRT.js memory are made there, inside the call).
// A step's wall time minus its graph time is then the page's own cost for SD1.5-sized tensors.

import { Tensor } from '@litertjs/core';
import { DeviceTensor, LiteRtRunner } from './litert_runner.js';

export class SyntheticRunner extends LiteRtRunner {
  constructor() {
    super({ accelerator: 'wasm' });
  }

  async load(name, bytes, graph) {
    this.models.set(name, { model: null, graph, order: graph.outputs.map((o) => o.name) });
  }

  unload(name) {
    this.models.delete(name);
  }

  async execute(entry, feeds, keep) {
    return entry.graph.outputs.map((o, k) => {
      const data = new Float32Array(o.shape.reduce((a, b) => a * b, 1));
      return keep[k] ? new DeviceTensor(new Tensor(data, o.shape), o.shape) : data;
    });
  }
}
