"""`mobilesd app web`: the browser client (web_app/) run headless, like `mobilesd app android|ios`.

Serves the page and the bundle on localhost (mobilesd serve), opens it in headless Chromium (WebGPU over
SwiftShader, or LiteRT.js's WASM path), fills in the form and presses Generate, or Benchmark with --report
(the page's own latency report, caught as the download it is), then writes the page's image as a PNG.
The page verifies every file's SHA-256 before any graph runs; a refused bundle is this command's error.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError

HELP = "run a bundle through the browser client (web_app/, LiteRT.js) in headless Chromium"
PAGE = "index.html"


def add_arguments(p) -> None:
    p.add_argument("--accelerator", choices=("webgpu", "wasm"), default="webgpu",
                   help="LiteRT.js accelerator: webgpu (here software WebGPU, SwiftShader) or wasm (XNNPACK)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="WebGPU compute precision")
    p.add_argument("--reduce-memory", action="store_true", help="load each graph for its stage only")
    p.add_argument("--screenshot", default=None, help="also save a screenshot of the page after the run (PNG)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the page (default 1800)")


_RESET = "() => { window.mobilesdApp.lastResult = null; window.mobilesdApp.lastReport = null; window.mobilesdApp.error = null; }"
_DONE = ("() => window.mobilesdApp.error !== null || (document.body.dataset.state === 'done' && "
         "window.mobilesdApp.lastResult !== null)")


def _wait_done(page, timeout_s: float) -> None:
    page.wait_for_function(_DONE, timeout=timeout_s * 1000)
    error = page.evaluate("() => window.mobilesdApp.error")
    if error:
        problem, _, fix = error.partition("\nFix: ")
        raise MobileSDError(f"the browser client failed: {problem}", fix or None)


def open_bundle(session, bundle_url: str, timeout_s: float):
    """The app page with a bundle loaded and verified, or MobileSDError with the page's message."""
    page = session.open(f"{PAGE}?bundle={bundle_url}")
    page.wait_for_function("() => ['ready', 'error', 'no-bundle'].includes(document.body.dataset.state)",
                           timeout=timeout_s * 1000)
    state = page.evaluate("() => document.body.dataset.state")
    if state != "ready":
        error = page.evaluate("() => window.mobilesdApp.error") or "the page found no bundle"
        problem, _, fix = error.partition("\nFix: ")
        raise MobileSDError(f"the browser client refused the bundle: {problem}", fix or None)
    return page


def fill_form(page, settings: dict) -> None:
    """Set the page's inputs (keys: prompt, negative_prompt, steps, guidance, seed, scheduler, accelerator,
    precision, reduce_memory, warmup, repeats); None leaves the page's (the manifest's) default."""
    ids = {"prompt": "#prompt", "negative_prompt": "#negative-prompt", "steps": "#steps", "guidance": "#guidance",
           "seed": "#seed", "warmup": "#warmup", "repeats": "#repeats"}
    for key, sel in ids.items():
        if settings.get(key) is not None:
            page.fill(sel, str(settings[key]))
    if settings.get("scheduler"):
        supported = page.eval_on_selector("#scheduler", "s => [...s.options].map(o => o.value)")
        if settings["scheduler"] not in supported:
            raise MobileSDError(f"scheduler {settings['scheduler']!r} is not one this bundle supports",
                                f"use one of {', '.join(supported)}")
        page.select_option("#scheduler", settings["scheduler"])
    if settings.get("accelerator"):
        page.check(f"input[name=accelerator][value={settings['accelerator']}]")
    if settings.get("precision"):
        page.select_option("#precision", settings["precision"])
    if settings.get("reduce_memory") is not None:
        page.set_checked("#reduce-memory", bool(settings["reduce_memory"]))


def generate(page, settings: dict, timeout_s: float = 1800) -> dict:
    """Press Generate; the page's result (image as an (H, W, 3) uint8 array, settings, timings)."""
    fill_form(page, settings)
    page.evaluate(_RESET)
    page.click("#generate")
    _wait_done(page, timeout_s)
    return last_result(page)


def benchmark(page, settings: dict, timeout_s: float = 1800) -> tuple[dict, dict]:
    """Press Benchmark; (the page's last result, the latency report it downloaded)."""
    fill_form(page, settings)
    page.evaluate(_RESET)
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    page.click("#benchmark")
    _wait_done(page, timeout_s)
    for _ in range(100):   # the download event can trail the page's state by a moment
        if downloads:
            break
        page.wait_for_timeout(100)
    if not downloads:
        raise MobileSDError("the page finished the benchmark but downloaded no latency report",
                            "report this as a bug of web_app/app.js")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / downloads[-1].suggested_filename
        downloads[-1].save_as(path)
        report = json.loads(path.read_text())
    return last_result(page), report


def last_result(page) -> dict:
    r = page.evaluate("() => window.mobilesdApp.lastResult")
    r["image"] = np.asarray(r["image"], np.uint8).reshape(r["height"], r["width"], 3)
    return r


def _write_json(path: str | Path, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def run(args) -> int:
    from mobilesd.commands.serve import check_bundle_dir
    from mobilesd.latency.schema import validate_report
    from mobilesd.litert_js import BrowserSession
    from mobilesd.pipeline import save_png

    bundle = check_bundle_dir(args.bundle)
    settings = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "steps": args.steps,
                "guidance": args.guidance, "seed": args.seed, "scheduler": args.scheduler,
                "accelerator": args.accelerator, "precision": args.precision, "reduce_memory": args.reduce_memory}
    if args.report:
        settings.update(warmup=args.warmup, repeats=args.repeats)
    with BrowserSession(bundle=bundle, timeout_s=args.timeout) as session:
        # per-stage loading runs on LiteRT.js's single-threaded build (the page says why)
        page = open_bundle(session, "bundle/" + ("&threads=0" if args.reduce_memory else ""), args.timeout)
        try:
            if args.report:
                result, report = benchmark(page, settings, args.timeout)
                validate_report(report)
            else:
                result, report = generate(page, settings, args.timeout), None
        except MobileSDError as exc:
            tail = session.console_tail()
            raise MobileSDError(exc.problem + (f"\n  browser console:\n{tail}" if tail else ""), exc.fix) from exc
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
    save_png(result["image"], args.out)
    if report is not None:
        _write_json(args.report, report)
    t = result["timings"]
    s = result["settings"]
    print(f"image: {args.out} ({result['width']}x{result['height']}, {s['scheduler']}, {s['steps']} steps, "
          f"guidance {s['guidance']}, seed {s['seed']}, cfg {s['cfgMode']}) on {result['accelerator']}"
          + (f" ({', '.join(result['wasmFallbacks'])} on WASM)" if result["wasmFallbacks"] else ""))
    print(f"  load {result['loadSeconds']:.2f}s, text encoder {t['text_encoder']:.3f}s, denoising "
          f"{t['unet_step']:.3f}s, decoder {t['vae_decoder']:.3f}s, end to end {t['end_to_end']:.3f}s; page overhead "
          f"{t['overhead_per_step_s'] * 1e3:.3f} ms/step")
    if report is not None:
        print(f"latency report: {args.report} ({report['label']})")
    return 0
