// The client's manifest checks against the repository's JSON Schema (mobilesd/schemas/manifest.schema.json,
// validated with ajv), and the SHA-256 verification of every file, on a small bundle folder this test writes
// (real tokenizer and scheduler files from the golden vectors; graph files are bytes that are never run here:
// the graphs run in the browser tests, tests/test_app_web.py).

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import Ajv2020 from 'ajv/dist/2020.js';
import { REPO, GOLDEN, section } from './golden.js';
import { BundleManifest, FORMAT_VERSION } from '../src/core/bundle_manifest.js';

const schema = JSON.parse(fs.readFileSync(path.join(REPO, 'mobilesd', 'schemas', 'manifest.schema.json'), 'utf8'));
const validate = new Ajv2020({ strict: false, allErrors: true }).compile(schema);

class FolderSource {
  constructor(root) { this.root = root; this.label = root; }

  async readBytes(rel) { return new Uint8Array(fs.readFileSync(path.join(this.root, rel))); }
}

function tensor(name, shape, dtype = 'float32') { return { name, shape, dtype }; }

/** Writes a bundle folder with a format-2 manifest; returns {root, manifest}. */
function writeBundle() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mobilesd-web-bundle-'));
  const put = (rel, bytes) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), bytes);
  };
  const tok = section('tokenizer');
  put('tokenizer/vocab.json', fs.readFileSync(path.join(GOLDEN, tok.vocab)));
  put('tokenizer/merges.txt', fs.readFileSync(path.join(GOLDEN, tok.merges)));
  put('scheduler/scheduler_config.json', JSON.stringify(section('schedulers').configs.sd_epsilon));
  for (const name of ['text_encoder', 'unet', 'vae_decoder']) put(`${name}.tflite`, crypto.randomBytes(1000));
  const files = {};
  for (const rel of ['tokenizer/vocab.json', 'tokenizer/merges.txt', 'scheduler/scheduler_config.json',
    'text_encoder.tflite', 'unet.tflite', 'vae_decoder.tflite']) {
    const bytes = fs.readFileSync(path.join(root, rel));
    files[rel] = { sha256: crypto.createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
  }
  const verification = { rel_l2: 1e-4, rel_l2_per_output: {}, max_abs: 1e-3, threshold: 2e-2, passed: true, runtime: 'tflite' };
  const graph = (name, role, inputs, outputs, meta = {}) => ({
    name, role, file: `${name}.tflite`, format: 'tflite', precision: 'fp16', inputs, outputs,
    size_bytes: files[`${name}.tflite`].size, sha256: files[`${name}.tflite`].sha256, meta, verification,
    litert_js: { accelerator: 'webgpu', output_rel_l2: 1e-4, output_rel_l2_fp16: 6e-4, threshold: 5e-2, passed: true, error: null },
  });
  const manifest = {
    format: 'mobilesd-bundle', format_version: 2, bundle_id: 'web-0123456789abcdef', mobilesd_version: '0.1.0',
    created: '2026-12-01T00:00:00+00:00', target: 'web', precision: 'fp16',
    source: { model: 'assets/tiny-digits-sd', prediction_type: 'epsilon' },
    image: { height: 32, width: 32, channels: 3, layout: 'NHWC', range: [0, 1] },
    latent: { channels: 4, height: 8, width: 8, scaling_factor: 0.79, vae_scale_factor: 4 },
    tokenizer: { type: 'clip_bpe', dir: 'tokenizer', vocab: 'tokenizer/vocab.json', merges: 'tokenizer/merges.txt',
      max_length: 77, bos_id: 49406, eos_id: 49407, pad_id: 49407, lowercase: true, padding: 'max_length' },
    scheduler: { config: 'scheduler/scheduler_config.json', default: 'dpm', supported: ['dpm', 'euler', 'ddim', 'lcm'], train_timesteps: 1000 },
    cfg: { mode: 'batch', unet_batch: 2, batch_order: ['unconditional', 'conditional'], default_guidance: 7.5, negative_prompt_default: '' },
    unet: { chunks: ['unet'], timestep: { shape: [1], dtype: 'float32' } },
    graphs: [
      graph('text_encoder', 'text_encoder', [tensor('input_ids', [1, 77], 'int32')], [tensor('last_hidden_state', [1, 77, 32])]),
      graph('unet', 'unet', [tensor('sample', [2, 4, 8, 8]), tensor('timestep', [1]), tensor('encoder_hidden_states', [2, 77, 32])],
        [tensor('noise_pred', [2, 4, 8, 8])], { aliases: {}, chunk_index: 0 }),
      graph('vae_decoder', 'vae_decoder', [tensor('latent', [1, 4, 8, 8])], [tensor('image', [1, 32, 32, 3])]),
    ],
    quantization: null,
    verification: {
      graph_thresholds: { fp16: 2e-2 }, image_thresholds: { fp16: 3e-2 }, gpu_thresholds: { fp16: 5e-2 },
      end_to_end: { mean_abs: 1e-5, max_abs: 1e-3, threshold: 3e-2, passed: true, settings: {}, runtime: 'tflite' }, passed: true,
    },
    files,
  };
  fs.writeFileSync(path.join(root, 'manifest.json'), JSON.stringify(manifest, null, 2));
  return { root, manifest };
}

const bytesOf = (m) => new TextEncoder().encode(JSON.stringify(m));
const schemaErrors = () => (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`).join('; ');

test('the client reads format version 2, the schema\'s', () => {
  assert.equal(FORMAT_VERSION, schema.properties.format_version.const);
});

test('a bundle that satisfies the schema is accepted and verified file by file', async () => {
  const { root, manifest } = writeBundle();
  assert.ok(validate(manifest), schemaErrors());
  const bundle = BundleManifest.parse(fs.readFileSync(path.join(root, 'manifest.json')));
  const kept = await bundle.verifyFiles(new FolderSource(root));
  assert.equal(kept.size, Object.keys(manifest.files).length);
  assert.equal(bundle.unetChunks[0].name, 'unet');
});

test('one changed byte in a graph file is refused, naming the file', async () => {
  const { root } = writeBundle();
  const file = path.join(root, 'unet.tflite');
  const bytes = fs.readFileSync(file);
  bytes[500] ^= 0x01;
  fs.writeFileSync(file, bytes);
  const bundle = BundleManifest.parse(fs.readFileSync(path.join(root, 'manifest.json')));
  await assert.rejects(bundle.verifyFiles(new FolderSource(root)), /unet\.tflite does not match its SHA-256/);
});

test('a missing or truncated file is refused', async () => {
  const { root } = writeBundle();
  fs.truncateSync(path.join(root, 'tokenizer/merges.txt'), 10);
  fs.rmSync(path.join(root, 'vae_decoder.tflite'));
  const bundle = BundleManifest.parse(fs.readFileSync(path.join(root, 'manifest.json')));
  await assert.rejects(bundle.verifyFiles(new FolderSource(root)), /merges\.txt is 10 bytes, the manifest says/);
});

for (const [what, mutate, message] of [
  ['another format version', (m) => { m.format_version = 3; }, /format version 3 is not supported \(this client reads version 2\)/],
  ['format version 1', (m) => { m.format_version = 1; }, /format version 1 is not supported/],
  ['not a mobilesd manifest', (m) => { m.format = 'other'; }, /not a mobilesd bundle/],
  ['no cfg.mode', (m) => { delete m.cfg.mode; }, /cfg\.mode/],
]) {
  test(`${what}: refused by the schema and by the client`, () => {
    const { manifest } = writeBundle();
    mutate(manifest);
    assert.equal(validate(manifest), false, `the schema accepts ${what}`);
    assert.throws(() => BundleManifest.parse(bytesOf(manifest)), message);
  });
}

// valid manifests that this client still cannot run: refused with a message before anything is read
for (const [what, mutate, message] of [
  ['an ONNX bundle', (m) => { m.target = 'onnx'; m.graphs.forEach((g) => { g.format = 'onnx'; }); }, /TFLite bundles/],
  ['a graph file outside the file table', (m) => { m.graphs[1].file = 'other.tflite'; }, /other\.tflite is not in the manifest's file table/],
]) {
  test(`${what}: valid for the schema, refused by the browser client`, () => {
    const { manifest } = writeBundle();
    mutate(manifest);
    assert.ok(validate(manifest), schemaErrors());
    assert.throws(() => BundleManifest.parse(bytesOf(manifest)), message);
  });
}

test('manifest.json that is not JSON is refused with a message', () => {
  assert.throws(() => BundleManifest.parse(new TextEncoder().encode('{"format": ')), /not valid JSON/);
});
