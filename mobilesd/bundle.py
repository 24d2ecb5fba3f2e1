"""The export bundle: one folder with graphs, tokenizer, scheduler config and a versioned manifest.json.

The manifest is the only contract between Python and the apps: a JSON Schema shipped in the package
(``mobilesd/schemas/manifest.schema.json``, docs/manifest.md), checked when a bundle is written and when it is
read, strict JSON only. Every file in the bundle is listed with its SHA-256.

Bundles are written into a temporary sibling folder and put in place at the end by an atomic exchange, so a
failed or interrupted export leaves nothing behind and never costs the previous bundle.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mobilesd.errors import MobileSDError

logger = logging.getLogger(__name__)

FORMAT = "mobilesd-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
SCHEMA_PATH = Path(__file__).with_name("schemas") / "manifest.schema.json"
_OWNER = ".owner-pid"   # inside a .partial- folder: the process writing it (stale when that process is gone)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- strict JSON and the schema ---------------------------------------------------------------------------

def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON (strict JSON has no NaN or Infinity)")


def loads_strict(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as Swift, Java's org.json and browsers do."""
    return json.loads(text, parse_constant=_refuse_constant)


def nonfinite_fields(obj, path: str = "") -> list[str]:
    """Paths of every NaN / Infinity in a parsed JSON value, e.g. ``verification.end_to_end.mean_abs``."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return [path or "(top level)"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite_fields(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in nonfinite_fields(v, f"{path}[{i}]")]
    return []


def dumps_strict(obj, **kwargs) -> str:
    return json.dumps(obj, allow_nan=False, **kwargs)


@lru_cache(maxsize=1)
def manifest_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def manifest_problems(manifest) -> list[str]:
    """Every schema violation of ``manifest`` as 'field: what is wrong' (empty when valid)."""
    import jsonschema

    schema = manifest_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for err in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))):
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
        problems.append(f"{field or '(top level)'}: {err.message[:300]}")
    return problems


def validate_manifest(manifest, where: str = MANIFEST) -> None:
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT and manifest.get("format_version") != FORMAT_VERSION:
        raise MobileSDError(f"{where}: bundle format version {manifest.get('format_version')} is not supported "
                            f"(this mobilesd reads version {FORMAT_VERSION})",
                            "re-export the bundle with this mobilesd")
    problems = manifest_problems(manifest)
    if problems:
        shown = "\n    ".join(problems[:12]) + (f"\n    ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise MobileSDError(f"{where} does not match the bundle schema ({SCHEMA_PATH.name}):\n    {shown}",
                            "re-export the bundle; the schema is described in docs/manifest.md")


# ---- writing a bundle -------------------------------------------------------------------------------------

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stranded(out: Path) -> list[str]:
    """Tidy what an export killed outright (SIGKILL, power loss) left next to ``out``: partial folders whose
    writer is gone are removed; a previous bundle parked during a replacement is put back if ``out`` is
    missing, and named otherwise. Returns what was done, for the user."""
    out = Path(out)
    notes = []
    for p in sorted(out.parent.glob(f".{out.name}.partial-*")):
        try:
            pid = int((p / _OWNER).read_text())
        except (OSError, ValueError):
            pid = None
        if pid is None or not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"removed {p.name}, left by an export that did not finish")
    for p in sorted(out.parent.glob(f".{out.name}.old-*")):
        parked = p / out.name
        if parked.is_dir() and not out.exists():
            os.replace(parked, out)
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"restored the previous bundle {out} from {p.name} (an earlier replacement was interrupted)")
        elif parked.is_dir():
            notes.append(f"{p} holds an older bundle from an interrupted replacement: delete it when no longer needed")
        else:
            shutil.rmtree(p, ignore_errors=True)
    for note in notes:
        logger.warning(note)
    return notes


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_folder(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``. The old ``out`` stays usable until the new one is in place: swapped in one
    atomic step where the file system allows, else parked beside it and put back if the second rename fails."""
    if not out.exists():
        os.replace(new, out)
        return
    if _exchange(new, out):
        shutil.rmtree(new, ignore_errors=True)   # ``new`` now holds the old bundle
        return
    park = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, park / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(park / out.name, out)
        shutil.rmtree(park, ignore_errors=True)
        raise
    shutil.rmtree(park, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(out: Path, overwrite: bool = False):
    """Yield a temporary folder next to ``out``; on success it replaces ``out``, on any error (or Ctrl-C) it
    vanishes and ``out`` is as it was."""
    out = Path(out)
    check_output_dir(out, overwrite)
    recover_stranded(out)
    check_output_dir(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / _OWNER).write_text(str(os.getpid()))
        yield tmp
        (tmp / _OWNER).unlink(missing_ok=True)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_files(root: Path) -> dict[str, dict]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, _OWNER):
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
    """Add the file table and the content-derived bundle id, validate against the schema, write manifest.json."""
    from mobilesd.export import faults

    files = list_files(root)
    manifest = dict(manifest)
    manifest["files"] = files
    digest = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in files.items()}, sort_keys=True).encode())
    manifest["bundle_id"] = f"{manifest.get('target', 'bundle')}-{digest.hexdigest()[:16]}"
    for g in manifest.get("graphs", []):
        g["sha256"] = files[g["file"]]["sha256"] if g["file"] in files else folder_sha256(files, g["file"])
    try:
        text = dumps_strict(manifest, indent=2) + "\n"
    except ValueError as exc:
        raise MobileSDError(f"the manifest holds a value that is not strict JSON ({exc})",
                            "report this: a verification result was not finite") from exc
    validate_manifest(loads_strict(text), where=f"the manifest being written for {root}")
    faults.inject("finalize")
    (root / MANIFEST).write_text(text)
    return manifest


# ---- reading a bundle -------------------------------------------------------------------------------------

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


def read_manifest(root: Path) -> dict:
    """manifest.json of bundle ``root``: strict JSON, checked against the schema."""
    mf = Path(root) / MANIFEST
    if not mf.exists():
        raise MobileSDError(f"{root} is not a mobilesd bundle (no {MANIFEST})",
                            "pass a folder written by `mobilesd export`")
    text = mf.read_text()
    try:
        manifest = loads_strict(text)
    except json.JSONDecodeError as exc:
        raise MobileSDError(f"{mf} is not valid JSON ({exc})", "re-export the bundle") from exc
    except ValueError as exc:
        fields = nonfinite_fields(json.loads(text))
        raise MobileSDError(f"{mf}: field(s) {', '.join(fields)} hold NaN or Infinity, which strict JSON (and "
                            "the apps' parsers) refuse", "re-export the bundle with this mobilesd") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MobileSDError(f"{mf} is not a mobilesd manifest", "re-export the bundle")
    validate_manifest(manifest, where=str(mf))
    return manifest


def verify_files(root: Path, manifest: dict) -> None:
    """Every listed file present with its size and SHA-256; nothing unlisted beside them."""
    root = Path(root)
    for rel, info in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            raise MobileSDError(f"bundle file {rel} is missing", "re-export the bundle or copy it whole")
        if p.stat().st_size != info["size"] or sha256_file(p) != info["sha256"]:
            raise MobileSDError(f"bundle file {rel} does not match its SHA-256 in the manifest (corrupt or edited)",
                                "re-export the bundle or copy it again")


def load_bundle(path: str | Path, verify_checksums: bool = True) -> Bundle:
    root = Path(path)
    manifest = read_manifest(root)
    if verify_checksums:
        verify_files(root, manifest)
    return Bundle(root, manifest)
