"""Nothing lost under faults: a worker killed mid-conversion, a hung worker, Ctrl-C during an export, a full
disk. Each ends the export with a clear error, leaves the previous bundle intact and usable, and no
``.partial-`` folder (or worker process) behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mobilesd.bundle import atomic_folder, load_bundle, recover_stranded
from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export
from mobilesd.export.faults import ENV


@pytest.fixture(scope="module")
def previous(tiny_model_dir, tmp_path_factory):
    """A good bundle, the 'previous one' every failed export below must leave alone."""
    out = tmp_path_factory.mktemp("prev") / "bundle"
    export(tiny_model_dir, out, ExportOptions(target="onnx", progress=False))
    return out


def _fresh_copy(previous: Path, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "bundle"
    shutil.copytree(previous, out)
    return out, load_bundle(out).manifest["bundle_id"]


def _intact(out: Path, bundle_id: str):
    assert load_bundle(out).manifest["bundle_id"] == bundle_id   # every checksum verified
    assert not list(out.parent.glob(f".{out.name}.partial-*")), list(out.parent.iterdir())
    assert not list(out.parent.glob(f".{out.name}.old-*"))


def _export_isolated(tiny_model_dir, out, monkeypatch, fault, **opts):
    monkeypatch.setenv(ENV, fault)
    return export(tiny_model_dir, out, ExportOptions(target="onnx", overwrite=True, isolate=True, progress=False,
                                                     **opts))


def test_a_worker_killed_mid_conversion(tiny_model_dir, previous, tmp_path, monkeypatch):
    out, bid = _fresh_copy(previous, tmp_path)
    with pytest.raises(MobileSDError) as err:
        _export_isolated(tiny_model_dir, out, monkeypatch, "kill@convert:1")
    msg = err.value.problem
    assert "export step convert[1] died with exit code -9" in msg and "out-of-memory" in msg, msg
    assert "last log lines" in msg
    _intact(out, bid)


def test_a_hung_worker_is_stopped(tiny_model_dir, previous, tmp_path, monkeypatch):
    import psutil

    out, bid = _fresh_copy(previous, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(MobileSDError) as err:
        _export_isolated(tiny_model_dir, out, monkeypatch, "hang@convert:0", worker_timeout_s=15)
    assert time.monotonic() - t0 < 120
    assert "export step convert[0] did not finish within 15 s" in err.value.problem, err.value.problem
    assert not [c for c in psutil.Process().children(recursive=True) if c.is_running()
                and c.status() != psutil.STATUS_ZOMBIE and "spawn" in " ".join(c.cmdline())]
    _intact(out, bid)


def test_disk_full_while_writing(tiny_model_dir, previous, tmp_path, monkeypatch):
    out, bid = _fresh_copy(previous, tmp_path)
    monkeypatch.setenv(ENV, "enospc@convert:1")
    with pytest.raises(MobileSDError) as err:
        export(tiny_model_dir, out, ExportOptions(target="onnx", overwrite=True, progress=False))
    assert "no space left on the device" in err.value.problem, err.value.problem
    _intact(out, bid)


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "workers"])
def test_ctrl_c_during_export(tiny_model_dir, previous, tmp_path, isolate):
    import psutil

    out, bid = _fresh_copy(previous, tmp_path)
    code = ("import sys; from mobilesd.export import export, ExportOptions; "
            f"export({str(tiny_model_dir)!r}, {str(out)!r}, ExportOptions(target='onnx', overwrite=True, "
            f"isolate={isolate}, progress=False))")
    # as from a terminal: pytest-xdist's workers ignore SIGINT, and a child inheriting that would never see Ctrl-C
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:   # interrupt once the first graph is being written
            partial = list(tmp_path.glob(".bundle.partial-*"))
            if partial and (list(partial[0].glob("*.onnx")) or list(partial[0].glob(".work/io_*"))):
                break
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in proc.stdout.read().decode()
    psutil.wait_procs(children, timeout=30)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    _intact(out, bid)


def test_interrupted_replacement_keeps_the_old_bundle(previous, tmp_path, monkeypatch):
    """Where the atomic exchange is unavailable, the old bundle is parked and put back if the second rename
    fails; one stranded by a hard kill between the renames is restored by the next run."""
    import mobilesd.bundle as bundle_mod

    out, bid = _fresh_copy(previous, tmp_path)
    monkeypatch.setattr(bundle_mod, "_exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:   # the new bundle's rename into place
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", failing_replace)
    with pytest.raises(OSError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "x").write_text("new")
    monkeypatch.setattr(bundle_mod.os, "replace", real_replace)
    _intact(out, bid)

    # a hard kill between the two renames: the old bundle parked, nothing at ``out``
    park = tmp_path / ".bundle.old-killed"
    park.mkdir()
    os.replace(out, park / "bundle")
    notes = recover_stranded(out)
    assert any("restored the previous bundle" in n for n in notes)
    _intact(out, bid)


def test_stale_partial_folders_of_dead_exports_are_removed(previous, tmp_path):
    out, bid = _fresh_copy(previous, tmp_path)
    stale = tmp_path / ".bundle.partial-dead"
    stale.mkdir()
    (stale / ".owner-pid").write_text("999999999")
    live = tmp_path / ".bundle.partial-live"
    live.mkdir()
    (live / ".owner-pid").write_text(str(os.getpid()))
    recover_stranded(out)
    assert not stale.exists() and live.exists()
    shutil.rmtree(live)
    _intact(out, bid)
