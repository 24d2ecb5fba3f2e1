// The few numpy operations diffusers' schedulers compute their timesteps and sigmas with, with numpy's
// exact semantics (float64 arithmetic, round half to even, arange's length and fill rule, interp).

/** np.round: round half to even. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

/** np.arange(start, stop, step) for float or integer arguments. */
export function arange(start, stop, step = 1) {
  const n = Math.max(0, Math.ceil((stop - start) / step));
  // numpy fills a[i] = start + i * delta with delta = a[1] - a[0] = (start + step) - start
  const delta = (start + step) - start;
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = start + i * delta;
  return out;
}

/** np.linspace(start, stop, num, endpoint). */
export function linspace(start, stop, num, endpoint = true) {
  const div = endpoint ? num - 1 : num;
  const step = (stop - start) / div;
  const out = new Array(num);
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/** np.interp(x, xp, fp) for increasing xp. */
export function interp(x, xp, fp) {
  const n = xp.length;
  if (x <= xp[0]) return fp[0];
  if (x >= xp[n - 1]) return fp[n - 1];
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid] <= x) lo = mid; else hi = mid;
  }
  if (xp[lo] === x) return fp[lo];
  const slope = (fp[lo + 1] - fp[lo]) / (xp[lo + 1] - xp[lo]);
  return slope * (x - xp[lo]) + fp[lo];
}
