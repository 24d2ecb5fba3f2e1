"""Bundles of the bundled digits model shared by the client tests: each configuration is exported once per
test session (exports are the slow part of the app tests), into pytest's temporary folder."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def _digits_bundle(target: str, root: str, options: tuple) -> Path:
    from mobilesd.export import ExportOptions, export
    from mobilesd.loading import default_model_path

    opts = dict(options)
    name = "-".join([target] + [f"{k}{v}" for k, v in options]) or target
    out = Path(root) / "digits-bundles" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return export(default_model_path(), out, ExportOptions(target=target, progress=False, **opts)).root


def digits_bundle(tmp_path_factory, target: str, **options) -> Path:
    """The digits model exported with ``--target target`` and ``options`` (ExportOptions fields), once."""
    return _digits_bundle(target, str(tmp_path_factory.getbasetemp()), tuple(sorted(options.items())))
