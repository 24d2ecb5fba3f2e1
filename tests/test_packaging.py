"""mobilesd as an installed package: every package is in the wheel, and a wheel installed outside the repository
finds its default model (package data, importlib.resources), its schemas and its data files."""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "mobilesd", "converters", "quant", "assets")


def _setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed():
    cfg = _setuptools_config()
    found = set()
    for name, folder in cfg["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *rel)))
    assert found == set(cfg["packages"]), "pyproject's [tool.setuptools] packages must list exactly the " \
        f"package folders: missing {sorted(found - set(cfg['packages']))}, extra {sorted(set(cfg['packages']) - found)}"


def test_package_data_globs_name_existing_files():
    cfg = _setuptools_config()
    for package, globs in cfg["package-data"].items():
        folder = REPO / cfg["package-dir"].get(package, package.replace(".", "/"))
        for pattern in globs:
            assert [p for p in folder.glob(pattern) if p.is_file()], f"{package}: {pattern} matches no file"


CHECK = r"""
import json, sys
from pathlib import Path
site = Path(sys.argv[1]).resolve()
import mobilesd
from mobilesd.loading import DEFAULT_MODEL, default_model_path
from mobilesd.latency.schema import load_schema
from mobilesd.latency.roofline import load_devices
assert Path(mobilesd.__file__).resolve().is_relative_to(site), mobilesd.__file__
assert DEFAULT_MODEL.resolve().is_relative_to(site), DEFAULT_MODEL
assert default_model_path() == DEFAULT_MODEL and (DEFAULT_MODEL / "model_index.json").is_file(), \
    f"the default model is not installed: {DEFAULT_MODEL} (default_model_path() {default_model_path()})"
from mobilesd.loading import load_pipeline
pipe = load_pipeline(default_model_path())
assert pipe.unet.config.sample_size == 8, pipe.unet.config.sample_size
assert load_schema()["title"] and load_devices()
import mobilesd.converters.base, mobilesd.quant
schema = Path(mobilesd.__file__).with_name("schemas") / "manifest.schema.json"
assert json.loads(schema.read_text())
print("installed ok", DEFAULT_MODEL)
"""


def test_wheel_installs_outside_the_repo_with_its_default_model(tmp_path):
    src = tmp_path / "src"  # build from a copy: a build in the repo would write build/ and *.egg-info there
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    res = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                          str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("mobilesd-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mobilesd/assets/tiny-digits-sd/unet/diffusion_pytorch_model.safetensors" in names
    assert "mobilesd/schemas/manifest.schema.json" in names and "mobilesd/latency/devices.json" in names
    # a throwaway venv that sees this venv's third-party packages but not its editable mobilesd: a directory
    # named in a .pth file is added to sys.path, but the .pth files inside it (the editable finder) do not run
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "main-venv-deps.pth").write_text("\n".join(deps) + "\n")
    res = subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([str(python), "-c", CHECK, str(site)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=env)  # cwd outside the repo: nothing found by accident
    assert res.returncode == 0 and "installed ok" in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]
    res = subprocess.run([str(venv / "bin" / "mobilesd"), "estimate", "--device", "s23", "--steps", "2"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0 and "target" in res.stdout, res.stderr[-2000:]
