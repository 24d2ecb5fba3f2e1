// SampleTimer: per-stage wall times of one generation (performance.now(), monotonic), as Apple's SampleTimer.
//
// Stages are the latency report's (docs/latency-report.md): text_encoder, unet_step (one whole denoising
// step), unet_chunk_<i> (chunk i within a step, both CFG calls summed), vae_decoder, end_to_end. Besides the
// wall time, the graph runner reports how long each call spent inside the runtime ("graph" time: LiteRT.js
// run + the output read-back); a step's wall time minus its graph time is the page's own overhead.

const now = () => globalThis.performance.now() / 1000;

export class SampleTimer {
  constructor() {
    this.stages = {};        // stage -> [seconds, ...] (one entry per call)
    this.steps = [];         // per step: {seconds, graph_s, chunks_s: [...]}
    this.currentStep = null;
  }

  static now() { return now(); }

  add(stage, seconds) {
    (this.stages[stage] ??= []).push(seconds);
  }

  async time(stage, fn) {
    const t0 = now();
    const out = await fn();
    this.add(stage, now() - t0);
    return out;
  }

  beginStep() {
    this.currentStep = { t0: now(), graph_s: 0, chunks_s: [] };
  }

  /** A graph call inside the current step: its chunk index, wall seconds and seconds inside the runtime. */
  chunk(index, seconds, graphSeconds) {
    const s = this.currentStep;
    if (!s) return;
    s.chunks_s[index] = (s.chunks_s[index] ?? 0) + seconds;
    s.graph_s += graphSeconds;
  }

  endStep() {
    const s = this.currentStep;
    const seconds = now() - s.t0;
    this.add('unet_step', seconds);
    s.chunks_s.forEach((c, i) => this.add(`unet_chunk_${i}`, c));
    this.steps.push({ seconds, graph_s: s.graph_s, overhead_s: Math.max(0, seconds - s.graph_s), chunks_s: s.chunks_s });
    this.currentStep = null;
  }

  /** A plain summary: {stage: seconds} (sums for per-step stages) plus per-step overhead. */
  summary() {
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    const out = {};
    for (const [k, v] of Object.entries(this.stages)) out[k] = sum(v);
    out.overhead_per_step_s = this.steps.length ? sum(this.steps.map((s) => s.overhead_s)) / this.steps.length : 0;
    return out;
  }
}
