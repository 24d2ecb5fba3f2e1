"""No raw Python exception reaches a user: `mobilesd` turns a bug into a short message naming the file that
holds the traceback (exit code 1); user errors (MobileSDError) keep their "error: ... fix: ..." form (exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mobilesd import cli
from mobilesd.errors import MobileSDError


def _report_path(stderr: str) -> Path:
    m = re.search(r"the full traceback is in (\S+)", stderr)
    assert m, stderr
    return Path(m[1])


def test_internal_error_is_a_short_message_and_a_report(monkeypatch, tmp_path, capsys):
    """Fault injection: the command's code raises an exception that is not a user error."""
    import mobilesd.commands.generate as generate

    def broken(args):
        return {}["no such key"]  # a real KeyError from inside a command

    monkeypatch.setenv("MOBILESD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    monkeypatch.setattr(generate, "run", broken)
    rc = cli.main(["generate", "--bundle", str(tmp_path), "--prompt", "a cat"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err and len(err.splitlines()) <= 4, err  # short, no traceback on screen
    assert err.startswith("mobilesd generate: internal error: KeyError: 'no such key'")
    assert "please report" in err
    report = _report_path(err)
    assert report.parent == tmp_path / "cache" / "crash-reports"
    text = report.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'no such key'" in text
    assert f"mobilesd generate --bundle {tmp_path} --prompt a cat" in text  # the command line, to reproduce
    assert "in broken" in text  # the frame that failed


def test_internal_error_while_building_the_parser(monkeypatch, tmp_path, capsys):
    """A command module that fails to import (a broken dependency) is reported the same way."""
    def broken_import(name):
        raise ImportError("libsomething.so: cannot open shared object file")

    monkeypatch.setenv("MOBILESD_CACHE", str(tmp_path))
    monkeypatch.setattr(cli, "_load", broken_import)
    rc = cli.main(["bench", "--bundle", "x"])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error: ImportError: libsomething.so" in err
    assert "ImportError" in _report_path(err).read_text()


def test_traceback_on_screen_when_asked(monkeypatch, tmp_path, capsys):
    import mobilesd.commands.generate as generate

    monkeypatch.setenv("MOBILESD_CACHE", str(tmp_path))
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    monkeypatch.setattr(generate, "run", lambda args: 1 / 0)
    assert cli.main(["generate", "--bundle", "b", "--prompt", "p"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err


def test_unwritable_cache_still_reports(monkeypatch, tmp_path, capsys):
    """If the cache folder cannot be written, the report goes to the temp folder, never lost."""
    import mobilesd.commands.generate as generate

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MOBILESD_CACHE", str(blocker))  # cache "folder" is a file: mkdir fails
    monkeypatch.setattr(generate, "run", lambda args: [][1])
    assert cli.main(["generate", "--bundle", "b", "--prompt", "p"]) == 1
    report = _report_path(capsys.readouterr().err)
    assert "IndexError" in report.read_text()
    report.unlink()


def test_user_errors_keep_their_form(monkeypatch, capsys):
    import mobilesd.commands.generate as generate

    def user_error(args):
        raise MobileSDError("bundle b has no manifest.json", "pass a folder written by `mobilesd export`")

    monkeypatch.setattr(generate, "run", user_error)
    assert cli.main(["generate", "--bundle", "b", "--prompt", "p"]) == 2
    err = capsys.readouterr().err
    assert err == ("mobilesd generate: error: bundle b has no manifest.json\n"
                   "  fix: pass a folder written by `mobilesd export`\n")


def test_real_process_exit_code(tmp_path):
    """The installed entry point: a user error on a real command exits 2 with no traceback."""
    env = {"MOBILESD_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "mobilesd", "generate", "--bundle", str(tmp_path / "nope"),
                        "--prompt", "p"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "error:" in r.stderr
