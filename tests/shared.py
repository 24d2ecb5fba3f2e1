"""Things built once per test run, also when pytest-xdist runs the suite in several worker processes (as
scripts/test.sh does): the first worker that needs one builds it under a file lock, the others wait for it and
reuse it. Without xdist this is a plain cache under pytest's temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def run_root(tmp_path_factory) -> Path:
    """The temporary folder of the whole run: under xdist each worker's base folder sits inside it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(path)`` once per test run for ``name``; every later caller, in any worker, gets ``path``.
    A build that fails leaves nothing behind, so the next caller tries again (and fails the same way)."""
    path = run_root(tmp_path_factory) / "shared" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    done = path.with_name(path.name + ".done")
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            try:
                build(path)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
            done.touch()
    return path
