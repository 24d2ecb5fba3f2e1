"""Report rendering: Markdown and self-contained HTML from bench-, estimate- and app-style reports, and the
HTML opened in a real headless Chromium (Debian package `chromium`) to check its plots load."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mobilesd.cli import main
from mobilesd.latency.schema import validate_report

APP = Path(__file__).parent / "data" / "latency_app_report.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: after load it writes what every <img> decoded to into the DOM,
# so --dump-dom shows whether the plots really render (a broken image has naturalWidth 0).
PROBE = """<script>
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'imgcheck';
  pre.textContent = JSON.stringify(Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(pre);
});
</script>"""


def chromium_image_check(html_path: Path, work: Path):
    """[(complete, naturalWidth, naturalHeight)] per <img> as Chromium decodes them; None without Chromium."""
    if CHROMIUM is None:
        return None
    probe = work / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    profile = work / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="imgcheck">(.*?)</pre>', res.stdout, re.S)
    assert m, "the probe script did not run: " + res.stdout[-500:]
    return json.loads(m.group(1).replace("&quot;", '"'))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """(a) a bench-style report (bench_runtime's own output), (b) an SD1.5 estimate, (c) the app JSON."""
    from test_latency_bench import StubPipeline, _fake_bundle

    from mobilesd.latency import roofline
    from mobilesd.latency.bench import bench_runtime

    tmp = tmp_path_factory.mktemp("rep")
    bench = bench_runtime(_fake_bundle(tmp), "tflite", warmup=0, repeats=2, steps=20, progress=False,
                          pipeline_factory=lambda b, rt, th: StubPipeline(rt))
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


def test_markdown_summary(reports, capsys):
    from mobilesd.latency.render import render_markdown

    md = render_markdown([json.loads(p.read_text()) for p in reports])
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + 3  # header + one row per run
    assert "MISS" in md and "PASS" in md
    assert "[estimate, not a measurement" in md and "measured on a host" in md


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
    assert "7 s target" in html or "target: <b>7 s</b>" in html
    assert html.count("class=\"run\"") == 3


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


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package: chromium)")
def test_html_renders_in_headless_chromium(reports, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, reports), "--out", str(out)]) == 0
    loaded = chromium_image_check(out, tmp_path)
    assert len(loaded) == 3
    for complete, w, h in loaded:
        assert complete and w > 300 and h > 150
    # the check can fail: a corrupted plot decodes to nothing
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/]{40}", "base64,////", out.read_text(), count=1))
    loaded = chromium_image_check(broken, tmp_path)
    assert loaded[0][1] == 0 and loaded[1][1] > 300
