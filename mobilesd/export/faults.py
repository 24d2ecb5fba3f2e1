"""Fault injection for the export's fault tests (tests/test_export_faults.py), by environment variable.

``MOBILESD_EXPORT_FAULT=<action>@<point>`` makes the export fail at a named point the way a real fault
would: ``kill`` (SIGKILL to the current process: a worker killed by the OOM killer), ``hang`` (never
returns: a stuck converter), ``enospc`` (OSError "No space left on device" from a write). Points:
``convert:<graph index>`` (inside the conversion task), ``finalize`` (writing the manifest). Unset, it
costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "MOBILESD_EXPORT_FAULT"


def inject(point: str) -> None:
    spec = os.environ.get(ENV)
    if not spec or "@" not in spec:
        return
    action, where = spec.split("@", 1)
    if where != point:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        while True:
            time.sleep(60)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")
    else:
        raise ValueError(f"{ENV}: unknown fault {action!r}")
