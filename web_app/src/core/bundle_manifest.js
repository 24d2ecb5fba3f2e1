// BundleManifest: reads and checks a bundle's manifest.json (docs/manifest.md, mobilesd/schemas/
// manifest.schema.json) and verifies every file against its SHA-256 before any graph runs.
//
// The page and the tests share this code; file access and hashing come in from outside (a BundleSource
// with readBytes(path) / readText(path), and sha256(bytes) -> hex, SubtleCrypto in browsers and node).

import { BundleError } from './bundle_error.js';

export const FORMAT = 'mobilesd-bundle';
export const FORMAT_VERSION = 2;
// graph formats this client runs (LiteRT.js): TFLite bundles of --target web (or android, the same graphs)
export const RUNNABLE_TARGETS = ['web', 'android'];

/** SHA-256 of bytes as lowercase hex, with SubtleCrypto (window.crypto or node's globalThis.crypto). */
export async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function requireThat(cond, problem, fix = 're-export the bundle with `mobilesd export --target web`') {
  if (!cond) throw new BundleError(problem, fix);
}

export class BundleManifest {
  constructor(manifest, manifestBytes) {
    this.manifest = manifest;
    this.manifestBytes = manifestBytes;
  }

  /** Parse manifest.json bytes and check what this client relies on (format, version, graphs, files). */
  static parse(bytes) {
    let manifest;
    try {
      manifest = JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      throw new BundleError(`manifest.json is not valid JSON (${err.message})`, 're-export the bundle');
    }
    requireThat(manifest && typeof manifest === 'object' && manifest.format === FORMAT,
      'this folder is not a mobilesd bundle (manifest.json has no "format": "mobilesd-bundle")',
      'pick a folder written by `mobilesd export`');
    requireThat(manifest.format_version === FORMAT_VERSION,
      `bundle format version ${JSON.stringify(manifest.format_version)} is not supported (this client reads version ${FORMAT_VERSION})`,
      'export the bundle again with a mobilesd that writes format version 2');
    const m = new BundleManifest(manifest, bytes);
    m.check();
    return m;
  }

  check() {
    const m = this.manifest;
    requireThat(RUNNABLE_TARGETS.includes(m.target),
      `this is a ${m.target} bundle; the browser client runs TFLite bundles (target web or android)`,
      'export with `mobilesd export --target web`');
    requireThat(m.files && typeof m.files === 'object' && Object.keys(m.files).length > 0, 'manifest.json lists no files');
    requireThat(Array.isArray(m.graphs) && m.graphs.length >= 3, 'manifest.json lists fewer than three graphs');
    for (const g of m.graphs) {
      requireThat(g.format === 'tflite', `graph ${g.name} is ${g.format}, not tflite`, 'export with `mobilesd export --target web`');
      requireThat(g.file in m.files, `graph file ${g.file} is not in the manifest's file table, so it cannot be verified`);
    }
    for (const name of m.unet?.chunks ?? []) requireThat(this.graphOrNull(name), `UNet chunk ${name} has no graph entry`);
    requireThat((m.unet?.chunks ?? []).length >= 1, 'manifest.json names no UNet graphs (unet.chunks)');
    requireThat(this.graphsByRole('text_encoder').length === 1 && this.graphsByRole('vae_decoder').length === 1,
      'the bundle needs exactly one text encoder and one VAE decoder graph');
    for (const rel of [m.tokenizer?.vocab, m.tokenizer?.merges, m.scheduler?.config]) {
      requireThat(typeof rel === 'string' && rel in m.files, `${rel} (tokenizer or scheduler file) is not in the manifest's file table`);
    }
    requireThat([1, 2].includes(m.cfg?.unet_batch), `cfg.unet_batch ${m.cfg?.unet_batch} is not 1 or 2`);
    requireThat(['batch', 'sequential', 'none'].includes(m.cfg?.mode), `cfg.mode ${JSON.stringify(m.cfg?.mode)} is not batch, sequential or none`);
    requireThat(Array.isArray(m.scheduler?.supported) && m.scheduler.supported.length > 0, 'scheduler.supported is empty');
  }

  get id() { return this.manifest.bundle_id; }

  graphOrNull(name) { return this.manifest.graphs.find((g) => g.name === name) ?? null; }

  graph(name) {
    const g = this.graphOrNull(name);
    if (!g) throw new BundleError(`the bundle has no graph ${name}`, 're-export the bundle');
    return g;
  }

  graphsByRole(role) { return this.manifest.graphs.filter((g) => g.role === role); }

  get textEncoder() { return this.graphsByRole('text_encoder')[0]; }

  get decoder() { return this.graphsByRole('vae_decoder')[0]; }

  get unetChunks() { return this.manifest.unet.chunks.map((n) => this.graph(n)); }

  /**
   * Read every file of the bundle and check its size and SHA-256 against the manifest. Returns a Map
   * path -> bytes of the files kept (graphs and tokenizer/scheduler files, read once). Throws BundleError
   * naming the first file that is missing or differs; nothing of the bundle has run by then.
   */
  async verifyFiles(source, { sha256 = sha256Hex, onProgress = () => {}, keep = () => true } = {}) {
    const entries = Object.entries(this.manifest.files);
    const kept = new Map();
    let done = 0;
    for (const [rel, info] of entries) {
      let bytes;
      try {
        bytes = await source.readBytes(rel);
      } catch (err) {
        throw new BundleError(`bundle file ${rel} cannot be read (${err.message})`,
          'copy the whole bundle folder, or re-export it');
      }
      if (bytes.byteLength !== info.size) {
        throw new BundleError(`bundle file ${rel} is ${bytes.byteLength} bytes, the manifest says ${info.size}: the bundle `
          + 'is damaged or was changed after export', 're-export the bundle or copy it again');
      }
      const digest = await sha256(bytes);
      if (digest !== info.sha256) {
        throw new BundleError(`bundle file ${rel} does not match its SHA-256 in manifest.json: the bundle is damaged or `
          + 'was changed after export', 're-export the bundle or copy it again');
      }
      if (keep(rel)) kept.set(rel, bytes);
      done += 1;
      onProgress(done, entries.length, rel);
    }
    return kept;
  }
}
