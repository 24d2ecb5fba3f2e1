"""The LiteRT.js check of a web bundle: every graph loaded and run by LiteRT.js in headless Chromium.

`mobilesd export --target web` writes a TFLite bundle (the android converter and passes); this is its extra
verification. Each graph is compiled by LiteRT.js (``@litertjs/core`` from web_app/node_modules, which bundles
its wasm) for WebGPU, run on the export's fixed inputs in fp32 and again with ``precision: 'fp16'`` (a GPU with
``shader-f16`` may pick fp16 by itself), and its outputs are compared with PyTorch's. A graph that does not
run fully on WebGPU fails the check unless WASM is allowed (``--allow-cpu-fallback``); then it is run on WASM
(XNNPACK) and recorded as such. The result is the manifest's ``graphs[].litert_js`` entry
(mobilesd/schemas/manifest.schema.json).

Here WebGPU is Chromium's software adapter (SwiftShader: ``--enable-unsafe-webgpu --enable-unsafe-swiftshader
--use-webgpu-adapter=swiftshader``, ../shared/PROBES.md): op coverage and numerics are real, timings are not
a GPU's. Browser start-up is the slow part (seconds), so all graphs of a bundle are checked in one session
(``check_graphs``), each on a page of its own; ``BrowserSession`` is also what `mobilesd app web` drives the page with.

The hook for the exporter, per graph of a ``--target web`` export, after conversion::

    from mobilesd.litert_js import GraphToCheck, check_graphs
    results = check_graphs([GraphToCheck(name, path, inputs, reference, output_names, run=small_enough)],
                           allow_wasm=opts.allow_cpu_fallback, precision=weight_precision)
    info["litert_js"] = results[name]          # fail the export when not results[name]["passed"]
"""

from __future__ import annotations

import base64
import math
from collections import deque
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError

CHROMIUM = os.environ.get("MOBILESD_CHROMIUM", "/usr/bin/chromium")
# WebGPU over SwiftShader (the only adapter on a machine without a GPU), a closed network, a fresh profile
# (Playwright gives every launch a temporary one).
CHROMIUM_FLAGS = [
    "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-webgpu-adapter=swiftshader",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]
PRECISIONS = ("fp32", "fp16")
DEFAULT_TIMEOUT_S = 900.0


def check_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        raise MobileSDError("the Python playwright package is not installed (it drives Chromium headless)",
                            "run: bash scripts/setup_web.sh") from exc
    if not Path(CHROMIUM).exists():
        raise MobileSDError(f"Chromium is not installed at {CHROMIUM}",
                            "apt-get install chromium (scripts/setup.sh does), or set MOBILESD_CHROMIUM")


class BrowserSession:
    """Headless Chromium with WebGPU, a page server (mobilesd serve's WebServer) and a console log.

    ``with BrowserSession(bundle=B) as s: page = s.open("index.html?bundle=bundle/")``.
    """

    def __init__(self, bundle: str | Path | None = None, mounts: dict | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, downloads: str | Path | None = None):
        from mobilesd.commands.serve import WebServer

        check_playwright()
        self.server = WebServer(bundle, mounts=mounts)
        self.timeout_s = timeout_s
        self.downloads = downloads
        self.console: deque[str] = deque(maxlen=500)   # the page's console (LiteRT.js logs a lot): the last lines
        self._pw = self.browser = self.context = None
        self.start_seconds = None

    def __enter__(self) -> "BrowserSession":
        from playwright.sync_api import sync_playwright

        t0 = time.perf_counter()
        self.server.start()
        try:
            self._pw = sync_playwright().start()
            self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                                                    downloads_path=str(self.downloads) if self.downloads else None)
            self.context = self.browser.new_context(accept_downloads=True, viewport={"width": 900, "height": 900})
            self.context.set_default_timeout(self.timeout_s * 1000)
        except Exception as exc:
            self.close()
            raise MobileSDError(f"headless Chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                                "check `chromium --version`; bash scripts/setup_web.sh installs what the browser "
                                "client needs") from exc
        self.start_seconds = time.perf_counter() - t0
        return self

    def open(self, path: str):
        """A new page at ``path`` (relative to the server root), once it is past start-up (its body's
        data-state is no longer ``starting``)."""
        page = self.context.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.goto(self.server.url + path)
        page.wait_for_function("() => document.body.dataset.state && document.body.dataset.state !== 'starting'")
        return page

    def console_tail(self, n: int = 8) -> str:
        useful = [line for line in list(self.console) if not line.startswith(("info:", "log: INFO", "log: I1", "debug:"))]
        return "\n".join(useful[-n:])

    def close(self) -> None:
        for closer in (lambda: self.context and self.context.close(), lambda: self.browser and self.browser.close(),
                       lambda: self._pw and self._pw.stop()):
            try:
                closer()
            except Exception:   # closing a browser that already died must not hide the real error
                pass
        self.server.close()

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class GraphToCheck:
    """One graph of the bundle: its .tflite, the export's fixed inputs (by name) and PyTorch's outputs."""

    name: str
    path: str | Path
    inputs: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]          # output name -> PyTorch output
    output_names: list[str]                   # manifest order (= the file's output_0, output_1, ...)
    run: bool = True                          # False: compile only (a graph too large to run on software WebGPU)
    extra: dict = field(default_factory=dict)


def _rel_l2(got: np.ndarray, ref: np.ndarray) -> float | None:
    got = np.asarray(got, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return None
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(got - ref) / denom) if denom > 0 else float(np.linalg.norm(got - ref))


def _compare(result: dict, graph: GraphToCheck) -> tuple[float | None, dict, str | None]:
    """(max rel. L2 over outputs or None, per-output errors, problem) for one run's outputs."""
    if len(result["outputs"]) != len(graph.output_names):
        return None, {}, (f"LiteRT.js returned {len(result['outputs'])} outputs, the manifest lists "
                          f"{len(graph.output_names)}")
    per, problems = {}, []
    for out, name in zip(result["outputs"], graph.output_names):
        got = np.frombuffer(base64.b64decode(out["b64"]), dtype="<f4")
        ref = np.asarray(graph.reference[name], np.float32)
        if got.size != ref.size:
            problems.append(f"{name}: {got.size} values, PyTorch gives {ref.size}")
            per[name] = None
            continue
        bad = int(np.count_nonzero(~np.isfinite(got)))
        if bad:
            problems.append(f"{name}: {bad} of {got.size} values are NaN or infinite")
        per[name] = _rel_l2(got, ref)
    worst = None if any(v is None for v in per.values()) else max(per.values())
    return worst, per, "; ".join(problems) or None


def _run(page, spec: dict) -> dict:
    try:
        return page.evaluate("spec => window.checkGraph(spec)", spec)
    except Exception as exc:   # a crashed or hung tab: report it as this graph's failure
        return {"compiled": False, "fullyAccelerated": False, "outputs": [],
                "error": f"the browser failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}


def check_graphs(graphs: list[GraphToCheck], allow_wasm: bool, precision: str = "fp16",
                 threshold: float | None = None, session: BrowserSession | None = None) -> dict[str, dict]:
    """The ``litert_js`` manifest entry of every graph, all in one Chromium session. ``precision`` is the
    bundle's weight precision (it picks the GPU threshold, mobilesd.verify.GPU_THRESHOLDS)."""
    from mobilesd import verify

    if threshold is None:
        threshold = verify.GPU_THRESHOLDS.get(precision, verify.GPU_THRESHOLDS["fp16"])
    work = Path(tempfile.mkdtemp(prefix="mobilesd-litertjs-"))
    try:
        mounts = {}
        for i, g in enumerate(graphs):
            d = work / f"g{i}"
            d.mkdir()
            for name, arr in g.inputs.items():
                np.ascontiguousarray(arr).astype(np.asarray(arr).dtype.newbyteorder("<")).tofile(d / f"{name}.bin")
            mounts[f"g{i}"] = d                              # the inputs
            mounts[f"f{i}"] = Path(g.path).resolve().parent   # the graph, served from where it is
        own = session is None
        session = session or BrowserSession(mounts=mounts)
        if own:
            session.__enter__()
        else:
            for k, v in mounts.items():
                session.server.mount(k, v)
        results = {}
        try:
            for i, g in enumerate(graphs):
                # a page of its own for each graph: a wasm heap only grows, so SD-scale graphs checked one after
                # another in one page run out of it, and a graph that aborts the module breaks every later one
                page = session.open("check.html")
                try:
                    adapter = page.evaluate("() => window.adapterInfo()")
                    version = page.evaluate("() => navigator.userAgent")
                    results[g.name] = _check_one(page, session, g, i, allow_wasm, threshold, adapter, version)
                finally:
                    page.close()
            return results
        finally:
            if own:
                session.__exit__(None, None, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_one(page, session, g: GraphToCheck, index: int, allow_wasm: bool, threshold: float, adapter, ua) -> dict:
    base = f"{session.server.url}mount/g{index}/"
    graph_url = f"{session.server.url}mount/f{index}/{Path(g.path).name}"

    def spec(accelerator, precision, run=g.run):
        inputs = []
        for name, arr in g.inputs.items():
            dtype = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32"}.get(np.asarray(arr).dtype)
            if dtype is None:
                raise MobileSDError(f"{g.name}: input {name} is {np.asarray(arr).dtype}; LiteRT.js takes float32 or int32",
                                    "export the graph with float32 / int32 inputs")
            inputs.append({"name": name, "url": f"{base}{name}.bin", "dtype": dtype, "shape": list(np.shape(arr))})
        return {"graphUrl": graph_url, "accelerator": accelerator, "precision": precision, "run": run,
                "inputs": inputs}

    entry = {"accelerator": "none", "output_rel_l2": None, "output_rel_l2_fp16": None, "threshold": threshold,
             "passed": False, "error": None, "ran": g.run,
             "adapter": _adapter_name(adapter),
             "runtime": "LiteRT.js (@litertjs/core) in headless Chromium", "user_agent": ua}
    t0 = time.perf_counter()
    r32 = _run(page, spec("webgpu", "fp32"))
    if r32["compiled"] and r32["fullyAccelerated"]:
        entry["accelerator"] = "webgpu"
        problems = []
        if g.run:
            if r32.get("error"):
                problems.append(f"fp32: {r32['error']}")
            else:
                entry["output_rel_l2"], entry["output_rel_l2_per_output"], p = _compare(r32, g)
                if p:
                    problems.append(f"fp32: {p}")
            r16 = _run(page, spec("webgpu", "fp16"))
            if r16.get("error"):
                problems.append(f"fp16: {r16['error']}")
            else:
                entry["output_rel_l2_fp16"], entry["output_rel_l2_fp16_per_output"], p = _compare(r16, g)
                if p:
                    problems.append(f"fp16: {p}")
            for key, label in (("output_rel_l2", "fp32"), ("output_rel_l2_fp16", "fp16")):
                v = entry[key]
                if v is not None and not v <= threshold:
                    problems.append(f"{label} output error {v:.3g} > {threshold:.3g}")
            entry["passed"] = not problems and entry["output_rel_l2"] is not None \
                and entry["output_rel_l2_fp16"] is not None
        else:
            entry["passed"] = True
            entry["note"] = "compiled only: too large to run on software WebGPU here"
        entry["error"] = "; ".join(problems) or None
    else:
        why = r32.get("error") or "LiteRT.js cannot run every op of the graph on WebGPU (it would fall back to WASM)"
        entry["webgpu_error"] = why
        if allow_wasm:
            rw = _run(page, spec("wasm", "fp32"))
            if rw["compiled"]:
                entry["accelerator"] = "wasm"
                problems = [f"WebGPU: {why}"]
                if g.run:
                    if rw.get("error"):
                        problems.append(f"wasm: {rw['error']}")
                        entry["passed"] = False
                    else:
                        entry["output_rel_l2"], entry["output_rel_l2_per_output"], p = _compare(rw, g)
                        entry["passed"] = p is None and entry["output_rel_l2"] is not None \
                            and entry["output_rel_l2"] <= threshold
                        if p:
                            problems.append(f"wasm: {p}")
                else:
                    entry["passed"] = True
                entry["error"] = "; ".join(problems)
            else:
                entry["error"] = f"WebGPU: {why}; WASM: {rw.get('error')}"
        else:
            entry["error"] = why
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    for key in ("output_rel_l2", "output_rel_l2_fp16"):   # strict JSON: no NaN / inf in the manifest
        if entry[key] is not None and not math.isfinite(entry[key]):
            entry[key] = None
    return entry


def _adapter_name(adapter: dict | None) -> str | None:
    if not adapter:
        return None
    name = " ".join(v for v in (adapter.get("vendor"), adapter.get("architecture"), adapter.get("description")) if v)
    return f"{name} (software WebGPU)" if adapter.get("software") else name


def check_graph(tflite_path, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], output_names: list[str],
                allow_wasm: bool, precision: str = "fp16", run: bool = True,
                session: BrowserSession | None = None) -> dict:
    """``check_graphs`` for a single graph (its own browser session unless one is given)."""
    g = GraphToCheck(Path(tflite_path).stem, tflite_path, inputs, reference, output_names, run=run)
    return check_graphs([g], allow_wasm, precision=precision, session=session)[g.name]


def failures(results: dict[str, dict]) -> list[str]:
    """One line per graph that failed its LiteRT.js check (for the export's error message)."""
    return [f"{name}: LiteRT.js {r['accelerator']}: {r['error'] or 'failed'}" for name, r in results.items()
            if not r["passed"]]
