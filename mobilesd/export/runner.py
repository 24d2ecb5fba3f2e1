"""Running export steps in this process or in a worker process each.

For SD-scale models every heavy step (loading, converting one UNet chunk, the reference image) runs in its
own worker that loads only what it needs and gives all its memory back when it exits; small models run the
same task functions in-process. A worker that dies (the OOM killer's SIGKILL, a crash) or runs past the
timeout ends the export with an error naming the step, the exit code and the worker's last log lines; an
interrupted export (Ctrl-C) kills its worker first. No step is left running behind the user's back.

Workers fork from a forkserver that has imported torch, diffusers and litert-torch once (8 s a process on
this machine, and an SD1.5 export runs 9 workers); the forkserver itself has loaded no model and run no
torch op, so a worker starts as clean as a spawned one. The forkserver starts with the first worker and
ends with this process.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing as mp
import os
import time
import traceback
import uuid
from pathlib import Path

from mobilesd.errors import MobileSDError

logger = logging.getLogger(__name__)
LOG_TAIL_LINES = 12
# what every worker imports; a module that fails to import here is imported by the worker itself
WORKER_PRELOAD = ["mobilesd.export.tasks", "mobilesd.loading", "mobilesd.components", "diffusers",
                  "mobilesd.export.preload"]
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(exc: OSError, where: str) -> MobileSDError:
    return MobileSDError(f"no space left on the device while writing {where} ({exc.strerror})",
                         "free disk space or choose an --out on another disk; the previous bundle is untouched")


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    lines = [line for line in lines if line.strip()][-n:]
    return "\n".join("      " + line[:300] for line in lines) or "      (empty log)"


class TaskRunner:
    """``runner(task, **kwargs)``: call ``task(loaded=..., **kwargs)`` here or in a worker process."""

    def __init__(self, isolate: bool, loaded=None, timeout_s: float = 4 * 3600.0, poll_s: float = 0.5):
        self.isolate, self.loaded, self.timeout_s, self.poll_s = isolate, loaded, timeout_s, poll_s
        self.peaks: dict[str, int] = {}   # worker -> its peak RSS (bytes), isolated runs only
        self.seconds: dict[str, float] = {}   # step -> wall time, worker start-up included

    def __call__(self, fn, **kwargs) -> dict:
        step = fn.__name__.removeprefix("task_") + (f"[{kwargs['index']}]" if "index" in kwargs else "")
        start = time.monotonic()
        try:
            return self._run(fn, step, **kwargs)
        finally:
            self.seconds[step] = round(time.monotonic() - start, 2)

    def _run(self, fn, step: str, **kwargs) -> dict:
        if not self.isolate:
            return fn(loaded=self.loaded, **kwargs)
        job = kwargs["job"]
        tag = f"{fn.__name__}-{uuid.uuid4().hex[:8]}"
        result, log = job.work / f"{tag}.json", job.work / f"{tag}.log"
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(WORKER_PRELOAD)
        # this process's environment as it is now (the forkserver's is from when it started)
        proc = ctx.Process(target=_worker_main, args=(fn.__module__, fn.__name__, kwargs, str(result), str(log),
                                                      dict(os.environ)), daemon=True)
        proc.start()
        start = time.monotonic()
        try:
            while proc.is_alive():
                proc.join(self.poll_s)
                if proc.is_alive() and time.monotonic() - start > self.timeout_s:
                    proc.kill()
                    proc.join(10)
                    raise MobileSDError(
                        f"export step {step} did not finish within {self.timeout_s:.0f} s and was stopped "
                        f"(hung?); its last log lines:\n{_tail(log)}",
                        "rerun; if it hangs again, report it with the model's config (the worker log is above)")
        except BaseException:
            if proc.is_alive():   # Ctrl-C or an error in this process: never leave the worker running
                proc.kill()
                proc.join(10)
            raise
        if not result.exists():
            code = proc.exitcode
            why = " (SIGKILL: usually the out-of-memory killer)" if code == -9 else ""
            raise MobileSDError(
                f"export step {step} died with exit code {code}{why}; its last log lines:\n{_tail(log)}",
                "exit code -9 usually means out of memory: use more --unet-chunks, or free memory")
        data = json.loads(result.read_text())
        if "error" in data:
            err = data["error"]
            raise MobileSDError(err["problem"] + (f"\n{_tail(log)}" if err.get("show_log") else ""), err.get("fix"))
        self.peaks[step] = data.pop("_peak_rss_bytes", 0)
        return data


def _worker_main(module: str, name: str, kwargs: dict, result: str, log: str, environ: dict) -> None:
    import ctypes
    import importlib
    import resource
    import sys

    os.environ.clear()
    os.environ.update(environ)
    # large allocations through mmap, so memory freed inside a worker goes back to the OS at once
    # (glibc's M_MMAP_THRESHOLD; the environment variable would be read only when the forkserver started)
    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)
    except (OSError, AttributeError):
        pass

    # the worker's own output (native libraries included) goes to its log; the parent shows its tail on failure
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr, force=True)
    try:
        fn = getattr(importlib.import_module(module), name)
        data = fn(loaded=None, **kwargs)
    except MobileSDError as exc:
        data = {"error": {"problem": exc.problem, "fix": exc.fix}}
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        err = disk_full_error(exc, "the bundle")
        data = {"error": {"problem": err.problem, "fix": err.fix}}
    except Exception as exc:
        traceback.print_exc()
        data = {"error": {"problem": f"{name} failed: {type(exc).__name__}: {exc}",
                          "fix": "report this with the model's config and the traceback above", "show_log": True}}
    data["_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    tmp = Path(result + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(result)   # the parent sees a whole result or none
