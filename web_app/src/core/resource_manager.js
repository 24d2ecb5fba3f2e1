// ResourceManager: which graphs are loaded (compiled on the accelerator) and when (Apple's ResourceManaging).
//
// The default keeps every graph loaded after prepare(): fastest for repeated generations. With reduceMemory
// each graph is loaded for its stage and unloaded after it (text encoder, then the UNet chunks, then the
// decoder), so only one stage's weights are resident: what a phone-sized memory budget needs, at the price
// of compiling graphs per generation. Graph bytes come from the verified bundle (no second read).

import { BundleError } from './bundle_error.js';

export class ResourceManager {
  /**
   * @param {import('./bundle_manifest.js').BundleManifest} bundle
   * @param {Map<string, Uint8Array>} files verified bytes by bundle path
   * @param runner a GraphRunner: load(name, bytes, graph), run(name, inputs), unload(name)
   */
  constructor(bundle, files, runner, { reduceMemory = false } = {}) {
    this.bundle = bundle;
    this.files = files;
    this.runner = runner;
    this.reduceMemory = reduceMemory;
    this.loaded = new Set();
    this.loadSeconds = 0;
  }

  graphBytes(name) {
    const g = this.bundle.graph(name);
    const bytes = this.files.get(g.file);
    if (!bytes) throw new BundleError(`graph file ${g.file} was not read from the bundle`, 'reload the bundle');
    return bytes;
  }

  async load(name) {
    if (this.loaded.has(name)) return;
    const t0 = performance.now();
    await this.runner.load(name, this.graphBytes(name), this.bundle.graph(name));
    this.loadSeconds += (performance.now() - t0) / 1000;
    this.loaded.add(name);
  }

  unload(name) {
    if (!this.loaded.has(name)) return;
    this.runner.unload(name);
    this.loaded.delete(name);
  }

  /** Load every graph now (the default policy), so that generation times exclude compilation. */
  async prepare() {
    if (this.reduceMemory) return;
    for (const g of this.bundle.manifest.graphs) await this.load(g.name);
  }

  /**
   * Run a graph: loads it if needed; under reduceMemory the caller unloads the stage with release(). A load
   * here is the runtime's work, not the page's: its seconds count as graph time.
   */
  async run(name, inputs, options = {}) {
    const t0 = performance.now();
    await this.load(name);
    const loadSeconds = (performance.now() - t0) / 1000;
    const result = await this.runner.run(name, inputs, options);
    return { ...result, graphSeconds: result.graphSeconds + loadSeconds };
  }

  /** The stage is done with these graphs: unload them under reduceMemory. */
  release(names) {
    if (this.reduceMemory) names.forEach((n) => this.unload(n));
  }

  unloadAll() {
    [...this.loaded].forEach((n) => this.unload(n));
  }
}
