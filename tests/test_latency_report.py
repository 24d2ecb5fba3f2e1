"""Report rendering: Markdown and self-contained HTML from a real host bench of the test run's tiny bundle, an
SD1.5 phone estimate and the synthetic app example; verdicts (PASS / MISS only for a phone at 512x512); the
HTML opened in a real headless Chromium (Debian package `chromium`, installed by scripts/setup.sh): its plots
decode, and in a screenshot the per-stage plot's legend does not cover its bars."""

import base64
import copy
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.latency.schema import validate_report
from mobilesd.latency.verdict import MISS, NOT_COMPARABLE, PASS, SYNTHETIC, verdict

APP = Path(__file__).parent / "data" / "latency_app_report.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1300, 2000)  # CSS px; device scale factor 1, so screenshot pixels are CSS pixels

# Appended to a copy of the page: after load it writes what every <img> decoded to and where its content box
# lies into the DOM, so --dump-dom shows whether the plots really render (a broken image has naturalWidth 0).
PROBE = """<script>
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'imgcheck';
  pre.textContent = JSON.stringify(Array.from(document.images).map(i => {
    const r = i.getBoundingClientRect();
    return {complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, dpr: window.devicePixelRatio,
            left: r.left + window.scrollX + i.clientLeft, top: r.top + window.scrollY + i.clientTop,
            width: i.clientWidth, height: i.clientHeight};
  }));
  document.body.appendChild(pre);
});
</script>"""


def _chromium(args: list[str], work: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:  # the set-up installs it: a missing browser is a broken set-up, not a skip
        pytest.fail("headless Chromium is not installed (Debian package `chromium`; bash scripts/setup.sh installs it)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           f"--user-data-dir={work / 'chromium-profile'}", "--virtual-time-budget=10000", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def chromium_image_check(html_path: Path, work: Path) -> list[dict]:
    """Per <img>, as Chromium decodes and lays it out: complete, w/h (natural size), left/top/width/height of
    its content box in page pixels."""
    probe = work / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    res = _chromium(["--dump-dom", probe.as_uri()], work)
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', res.stdout, re.S)
    assert m, "the probe script did not run: " + res.stdout[-500:]
    return json.loads(m.group(1).replace("&quot;", '"'))


def chromium_screenshot(html_path: Path, work: Path) -> np.ndarray:
    shot = work / f"{html_path.stem}-screenshot.png"
    _chromium([f"--screenshot={shot}", html_path.as_uri()], work)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (WINDOW[1], WINDOW[0]), img.shape
    return img


@pytest.fixture(scope="module")
def reports(android_bundle, tmp_path_factory):
    """(a) `bench_runtime` on the test run's tiny bundle (real HostPipeline on LiteRT), (b) an SD1.5 estimate
    for the Galaxy S23, (c) the synthetic app example."""
    from mobilesd.latency import roofline
    from mobilesd.latency.bench import bench_runtime

    tmp = tmp_path_factory.mktemp("rep")
    bench = bench_runtime(android_bundle.root, "tflite", warmup=0, repeats=2, steps=4, threads=1, progress=False)
    plan = roofline.analytic_plan("sd15")
    est = roofline.estimate_report(plan, "galaxy-s23-gpu", 20, "batch", 512, 512,
                                   {"id": "analytic:sd15", "manifest_sha256": None}, "analytic:sd15")
    app = json.loads(APP.read_text())
    paths = []
    for name, rep in (("bench", bench), ("estimate", est), ("app", app)):
        validate_report(rep)
        p = tmp / f"{name}.json"
        p.write_text(json.dumps(rep))
        paths.append(p)
    return paths


def _load(paths):
    return [json.loads(p.read_text()) for p in paths]


def _md_rows(md: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("| ")]
    return {r[0]: r for r in rows[1:]}


def test_synthetic_example_is_labelled_as_such():
    app = json.loads(APP.read_text())
    assert app["synthetic"] is True and app["schema_version"] == "1.1"
    assert "SYNTHETIC EXAMPLE" in app["notes"] and set(app["bundle"]["manifest_sha256"]) == {"0"}
    bad = dict(app, synthetic="yes")
    with pytest.raises(MobileSDError, match="synthetic"):
        validate_report(bad)


def test_verdicts_need_a_phone_at_512(reports):
    bench, est, app = _load(reports)
    v = verdict(bench)  # a host run at 16x16: the case that used to read "PASS meets the 7 s target"
    assert v.status == NOT_COMPARABLE and not v.judged
    assert "not a phone: measured on a host" in v.text and "16x16, not 512x512" in v.text
    host512 = copy.deepcopy(bench)
    host512["settings"].update(width=512, height=512)
    v = verdict(host512)
    assert v.status == NOT_COMPARABLE and "not a phone" in v.text and "not 512x512" not in v.text
    # an app core run on this machine (desktop JVM / Linux / software WebGPU) is not a phone either
    desktop = dict(copy.deepcopy(app), synthetic=False)
    desktop["device"].update(name="app core on a desktop JVM", os="Linux 6.1", accelerator="cpu")
    v = verdict(desktop)
    assert v.status == NOT_COMPARABLE and "not a phone: the app ran on Linux 6.1" in v.text
    # the same report from an Android phone is judged; the synthetic flag alone takes the verdict away
    phone = dict(copy.deepcopy(app), synthetic=False)
    assert verdict(phone).status == PASS and verdict(app).status == SYNTHETIC
    slow = copy.deepcopy(phone)
    slow["stages"]["end_to_end"] = {"median_s": 9.5}
    assert verdict(slow).status == MISS and "by 2.50 s" in verdict(slow).text
    # estimates: judged for a phone at 512x512 only
    assert verdict(est).judged and "estimate, not a measurement" in verdict(est).text
    small = copy.deepcopy(est)
    small["settings"].update(width=256, height=256)
    assert verdict(small).status == NOT_COMPARABLE and "256x256, not 512x512" in verdict(small).text
    mac = copy.deepcopy(est)
    mac["device"].update(name="MacBook Pro M1 Max 32-core GPU", device_key="m1-max-32c-gpu", os="macOS")
    assert verdict(mac).status == NOT_COMPARABLE and "not a phone" in verdict(mac).text


def test_markdown_summary(reports):
    from mobilesd.latency.render import render_markdown

    bench, est, app = _load(reports)
    md = render_markdown([bench, est, app])
    rows = _md_rows(md)
    assert len(rows) == 3
    host_row, est_row = rows["host / tflite"], rows["Galaxy S23 (GPU) / estimate"]
    app_row = rows["Galaxy S23 / tflite-gpu (app) (synthetic example)"]
    assert host_row[-1].startswith(NOT_COMPARABLE) and "not a phone" in host_row[-1] and "16x16" in host_row[-1]
    assert app_row[1] == SYNTHETIC and app_row[-1].startswith(SYNTHETIC)
    assert est_row[-1].startswith((PASS, MISS)) and "estimate, not a measurement" in est_row[-1]
    for row in (host_row, app_row):  # never a PASS or MISS for a run that is not comparable or invented
        assert not re.search(r"\b(PASS|MISS)\b", " ".join(row)), row


def test_report_cli_writes_self_contained_html(reports, tmp_path, capsys):
    out = tmp_path / "report.html"
    md = tmp_path / "summary.md"
    assert main(["report", *map(str, reports), "--out", str(out), "--markdown", str(md)]) == 0
    html = out.read_text()
    assert "| run |" in capsys.readouterr().out and md.read_text().startswith("# Latency report")
    imgs = re.findall(r"<img [^>]*src='data:image/png;base64,([^']+)'", html)
    assert len(imgs) == 3
    for b in imgs:
        assert base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html  # nothing to fetch: self-contained
    assert "target: <b>7 s</b>" in html
    sections = re.findall(r'<section class="run".*?</section>', html, re.S)
    assert len(sections) == 3
    status = [re.search(r"<h3>.*?<span class=\"(\w+)\">([^<]+)</span></h3>", s).groups() for s in sections]
    assert status[0] == ("nc", NOT_COMPARABLE) and status[2] == ("synthetic", SYNTHETIC)
    assert status[1][1] in (PASS, MISS)
    assert "synthetic example" in sections[2] and "PASS" not in sections[2] and "MISS" not in sections[2]
    assert "PASS" not in sections[0] and "MISS" not in sections[0]


def test_report_cli_rejects_invalid_and_writes_nothing(reports, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    rep = json.loads(reports[2].read_text())
    del rep["stages"]["end_to_end"]
    bad.write_text(json.dumps(rep))
    out = tmp_path / "report.html"
    assert main(["report", str(reports[0]), str(bad), "--out", str(out)]) == 2
    assert "stages.end_to_end" in capsys.readouterr().err
    assert not out.exists()
    assert main(["report", str(reports[0]), "--out", str(tmp_path / "r.pdf")]) == 2


def test_html_renders_in_headless_chromium(reports, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, reports), "--out", str(out)]) == 0
    loaded = chromium_image_check(out, tmp_path)
    assert len(loaded) == 3
    for img in loaded:
        assert img["complete"] and img["w"] > 300 and img["h"] > 150
    # the check can fail: a corrupted plot decodes to nothing
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/]{40}", "base64,////", out.read_text(), count=1))
    loaded = chromium_image_check(broken, tmp_path)
    assert loaded[0]["w"] == 0 and loaded[1]["w"] > 300


# ---- the per-stage plot as a picture: its legend must not cover the bars ---------------------------------

def _rgb(color) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(color)) * 255


def _box(bbox, png_height: int, origin: tuple[float, float], inset: float = 0) -> tuple[int, int, int, int]:
    """A matplotlib display bbox (pixels, origin bottom left) as screenshot rows/columns [y0, y1) x [x0, x1)."""
    left, top = origin
    return (int(np.ceil(top + png_height - bbox.y1 + inset)), int(np.floor(top + png_height - bbox.y0 - inset)),
            int(np.ceil(left + bbox.x0 + inset)), int(np.floor(left + bbox.x1 - inset)))


def _overlap_problems(fig, png_height: int, shot: np.ndarray, origin: tuple[float, float]) -> list[str]:
    """What covers a bar, from the figure's artists and from the screenshot's pixels; [] when nothing does."""
    ax = fig.axes[0]
    legend = (fig.legends or [ax.get_legend()])[0]
    renderer = fig.canvas.get_renderer()
    leg_box = legend.get_window_extent(renderer)
    bars = [p for p in ax.patches if p.get_width() > 0]
    problems = []
    # 1. artists: the legend's box against the axes (it belongs outside them), every bar and value label
    if leg_box.overlaps(ax.get_window_extent(renderer)):
        problems.append("artists: the legend box lies on the axes")
    for i, bar in enumerate(bars):
        if leg_box.overlaps(bar.get_window_extent(renderer)):
            problems.append(f"artists: the legend box overlaps bar {i}")
    for t in ax.texts:
        if leg_box.overlaps(t.get_window_extent(renderer)):
            problems.append(f"artists: the legend box overlaps the label {t.get_text()!r}")
    # 2. pixels: every bar big enough to see is, inside a 3 px margin, its own colour (or, hatched, a blend of
    #    its colour and the white hatch lines) in the screenshot; legend text or frame over it is neither
    white = np.array([255.0, 255.0, 255.0])
    checked = 0
    for i, bar in enumerate(bars):
        y0, y1, x0, x1 = _box(bar.get_window_extent(renderer), png_height, origin, inset=3)
        if y1 - y0 < 4 or x1 - x0 < 4:
            continue  # a sliver a few pixels wide (the host run's stages on a seconds axis)
        px = shot[y0:y1, x0:x1].reshape(-1, 3).astype(float)
        face = _rgb(bar.get_facecolor())
        if bar.get_hatch():
            d = white - face
            t = np.clip(((px - face) @ d) / (d @ d), 0, 1)
            off = np.abs(px - (face + t[:, None] * d)).max(1)
        else:
            off = np.abs(px - face).max(1)
        foreign = float((off > 24).mean())
        checked += 1
        if foreign > 0.01:
            problems.append(f"pixels: {foreign:.1%} of bar {i} ({x0}..{x1}, {y0}..{y1}) is not the bar's colour")
    assert checked >= 4, f"only {checked} bars were large enough to check"
    # the legend itself is on screen: every handle's colour appears inside its box
    y0, y1, x0, x1 = _box(leg_box, png_height, origin)
    region = shot[y0:y1, x0:x1].reshape(-1, 3).astype(float)
    for handle in legend.legend_handles:
        color = handle.get_facecolor() if hasattr(handle, "get_hatch") else handle.get_color()
        if not (np.abs(region - _rgb(color)).max(1) <= 24).any():
            problems.append(f"pixels: legend entry {handle.get_label()!r} is not visible in the screenshot")
    return problems


def test_stage_plot_legend_does_not_cover_the_bars(reports, tmp_path):
    from mobilesd.latency.render import png_bytes, stage_bars_figure

    # the longest bar (the estimate) last: the old legend, inside the axes at the lower right, sat on it
    ordered = [reports[0], reports[2], reports[1]]
    out = tmp_path / "report.html"
    assert main(["report", *map(str, ordered), "--out", str(out)]) == 0
    page = out.read_text()
    embedded = base64.b64decode(re.search(r"base64,([^']+)'", page).group(1))
    fig = stage_bars_figure(_load(ordered))
    assert png_bytes(fig) == embedded, "the figure analysed here must be the page's first plot"
    png_w, png_h = Image.open(io.BytesIO(embedded)).size
    img = chromium_image_check(out, tmp_path)[0]
    assert (img["w"], img["h"], img["width"], img["height"], img["dpr"]) == (png_w, png_h, png_w, png_h, 1), \
        "the plot must be shown at its natural size for the pixel check"
    assert img["top"] + png_h < WINDOW[1], "the plot must lie within the screenshot"
    origin = (img["left"], img["top"])
    shot = chromium_screenshot(out, tmp_path)
    crop = shot[round(origin[1]):round(origin[1]) + png_h, round(origin[0]):round(origin[0]) + png_w].astype(float)
    plot = np.asarray(Image.open(io.BytesIO(embedded)).convert("RGB")).astype(float)
    assert np.abs(crop - plot).mean() < 2, "the screenshot does not show the plot where the page put it"
    assert _overlap_problems(fig, png_h, shot, origin) == []

    # negative control: the legend where it used to be (inside the axes, lower right) is caught
    (legend,) = fig.legends
    handles, names = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    legend.remove()
    fig.axes[0].legend(handles, names, fontsize=8, loc="lower right")
    old = png_bytes(fig)
    assert Image.open(io.BytesIO(old)).size == (png_w, png_h)  # same page layout
    control = tmp_path / "old-legend.html"
    control.write_text(page.replace(base64.b64encode(embedded).decode(), base64.b64encode(old).decode(), 1))
    problems = _overlap_problems(fig, png_h, chromium_screenshot(control, tmp_path), origin)
    assert any(p.startswith("artists:") for p in problems) and any(p.startswith("pixels:") for p in problems), problems
