// Reads the golden vectors (docs/golden-vectors.md) the Python reference writes: MOBILESD_GOLDEN, default
// <repo>/build/golden. Arrays are raw little-endian files named by {file, dtype, shape}.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const GOLDEN = process.env.MOBILESD_GOLDEN ? path.resolve(process.env.MOBILESD_GOLDEN)
  : path.join(REPO, 'build', 'golden');
const KNOWN_VERSIONS = [1];

let index = null;

/** index.json, checked: a golden folder of another format or version fails the tests with a message. */
export function goldenIndex() {
  if (index) return index;
  const file = path.join(GOLDEN, 'index.json');
  if (!fs.existsSync(file)) {
    throw new Error(`no golden vectors at ${GOLDEN}: run .venv/bin/python -m mobilesd.golden --out build/golden `
      + '(or set MOBILESD_GOLDEN)');
  }
  index = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (index.format !== 'mobilesd-golden' || !KNOWN_VERSIONS.includes(index.format_version)) {
    throw new Error(`${file}: format ${index.format} version ${index.format_version} is not one this client reads `
      + `(mobilesd-golden ${KNOWN_VERSIONS.join(', ')})`);
  }
  return index;
}

export function section(name) {
  const rel = goldenIndex().sections[name];
  return JSON.parse(fs.readFileSync(path.join(GOLDEN, rel), 'utf8'));
}

export function readText(rel) {
  return fs.readFileSync(path.join(GOLDEN, rel), 'utf8');
}

/** A golden array reference -> Float32Array / Int32Array (a copy, aligned). */
export function array(ref) {
  const buf = fs.readFileSync(path.join(GOLDEN, ref.file));
  const n = ref.shape.reduce((a, b) => a * b, 1);
  const Type = { float32: Float32Array, int32: Int32Array }[ref.dtype];
  if (!Type) throw new Error(`unknown golden dtype ${ref.dtype}`);
  if (buf.byteLength !== n * 4) throw new Error(`${ref.file}: ${buf.byteLength} bytes, expected ${n * 4}`);
  const out = new Type(n);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

/** Element k (the k-th sub-array along the first axis) of a golden array. */
export function slice(values, shape, k) {
  const n = shape.slice(1).reduce((a, b) => a * b, 1);
  return values.subarray(k * n, (k + 1) * n);
}

export function relL2(got, ref) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = got[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}
