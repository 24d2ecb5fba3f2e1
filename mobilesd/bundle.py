"""The export bundle: one folder with graphs, tokenizer, scheduler config and a versioned manifest.json.

The manifest is the only contract between Python and the apps (schema: docs/manifest.md). Every file in
the bundle is listed with its SHA-256. Bundles are written into a temporary sibling folder and renamed
into place at the end, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mobilesd.errors import MobileSDError

FORMAT = "mobilesd-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_output_dir(out: Path, overwrite: bool) -> None:
    out = Path(out)
    if out.exists() and not overwrite:
        raise MobileSDError(f"output folder {out} already exists", "pass --overwrite, or choose another --out")
    if out.exists() and not out.is_dir():
        raise MobileSDError(f"output path {out} exists and is not a folder", "choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MobileSDError(f"cannot create {parent}: {exc.strerror}", "choose a writable --out") from exc
    if not os.access(parent, os.W_OK):
        raise MobileSDError(f"output folder {parent} is not writable", "choose a writable --out")


@contextlib.contextmanager
def atomic_folder(out: Path, overwrite: bool = False):
    """Yield a temporary folder next to ``out``; on success it replaces ``out``, on error it vanishes."""
    out = Path(out)
    check_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_files(root: Path) -> dict[str, dict]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(root).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return files


def folder_sha256(files: dict[str, dict], folder: str) -> str:
    """Checksum of a graph that is a folder (a Core ML .mlpackage): the SHA-256 of the JSON object
    ``{path inside the folder: file sha256}`` with sorted keys and no spaces (``json.dumps(..., sort_keys=True,
    separators=(",", ":"))``), over the folder's entries in the ``files`` table."""
    prefix = folder.rstrip("/") + "/"
    inner = {k[len(prefix):]: v["sha256"] for k, v in files.items() if k.startswith(prefix)}
    if not inner:
        raise MobileSDError(f"graph {folder} is not in the bundle", "re-export the bundle")
    return hashlib.sha256(json.dumps(inner, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def finalize_manifest(root: Path, manifest: dict) -> dict:
    """Add the file table and the content-derived bundle id, then write manifest.json."""
    files = list_files(root)
    manifest = dict(manifest)
    manifest["files"] = files
    digest = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in files.items()}, sort_keys=True).encode())
    manifest["bundle_id"] = f"{manifest.get('target', 'bundle')}-{digest.hexdigest()[:16]}"
    for g in manifest.get("graphs", []):
        g["sha256"] = files[g["file"]]["sha256"] if g["file"] in files else folder_sha256(files, g["file"])
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@dataclass
class Bundle:
    root: Path
    manifest: dict

    @property
    def target(self) -> str:
        return self.manifest["target"]

    def graph(self, name: str) -> dict:
        for g in self.manifest["graphs"]:
            if g["name"] == name:
                return g
        raise KeyError(name)

    def graphs(self, role: str) -> list[dict]:
        return [g for g in self.manifest["graphs"] if g["role"] == role]

    def unet_graphs(self) -> list[dict]:
        return [self.graph(n) for n in self.manifest["unet"]["chunks"]]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def manifest_sha256(self) -> str:
        return sha256_file(self.root / MANIFEST)


def load_bundle(path: str | Path, verify_checksums: bool = True) -> Bundle:
    root = Path(path)
    mf = root / MANIFEST
    if not mf.exists():
        raise MobileSDError(f"{root} is not a mobilesd bundle (no {MANIFEST})",
                            "pass a folder written by `mobilesd export`")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise MobileSDError(f"{mf} is not valid JSON ({exc})", "re-export the bundle") from exc
    if manifest.get("format") != FORMAT:
        raise MobileSDError(f"{mf} is not a mobilesd manifest", "re-export the bundle")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise MobileSDError(f"bundle format version {manifest.get('format_version')} is not supported "
                            f"(this mobilesd reads version {FORMAT_VERSION})", "re-export the bundle with this mobilesd")
    if verify_checksums:
        for rel, info in manifest["files"].items():
            p = root / rel
            if not p.exists():
                raise MobileSDError(f"bundle file {rel} is missing", "re-export the bundle or copy it whole")
            if p.stat().st_size != info["size"] or sha256_file(p) != info["sha256"]:
                raise MobileSDError(f"bundle file {rel} does not match its SHA-256 in the manifest (corrupt or edited)",
                                    "re-export the bundle or copy it again")
    return Bundle(root, manifest)
