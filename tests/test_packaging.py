"""The wheel that users install: built from the source tree, installed into a fresh venv whose
dependencies come from the test environment's site-packages (offline, no rnnkit but the
wheel's), where ``rnnkit --version``, ``python -m rnnkit`` and the README's short tour run."""

import email
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the sources (the build writes nothing into the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist",
        source)
    (path,) = (tmp / "dist").glob("rnnkit-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv holding the wheel; a .pth file lends it the test environment's packages
    (that environment's own rnnkit, an editable install, is not among them)."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", path)
    python = path / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", wheel)
    site = pathlib.Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"))
    (site / "test_environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return path


def run(*command):
    """``command``'s stdout, stripped; a failure shows its stderr."""
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip()


def test_wheel_holds_the_package_license_and_ranges(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
    assert "rnnkit/__main__.py" in names and "rnnkit/cli.py" in names
    assert {n.split("/")[0] for n in names} == {"rnnkit", dist_info}  # no tests, no benchmarks
    assert f"{dist_info}/licenses/LICENSE" in names
    assert metadata["License-Expression"] == "Apache-2.0"
    runtime = {str(Requirement(r)) for r in metadata.get_all("Requires-Dist") if "extra" not in r}
    assert runtime == {str(Requirement(r)) for r in PYPROJECT["project"]["dependencies"]}


def test_version_and_help_from_the_installed_wheel(venv):
    version = PYPROJECT["project"]["version"]
    where = run(venv / "bin" / "python", "-c", "import rnnkit; print(rnnkit.__file__)")
    assert pathlib.Path(where).is_relative_to(venv), f"rnnkit imported from {where}"
    assert run(venv / "bin" / "rnnkit", "--version") == f"rnnkit {version}"
    assert "train" in run(venv / "bin" / "python", "-m", "rnnkit", "--help")


def test_readme_tour_runs_on_the_installed_wheel(venv):
    """The README's first Python block (your own model) runs as it is written."""
    tour = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    run(venv / "bin" / "python", "-c", tour)


def test_constraints_pin_versions_within_the_ranges():
    """constraints.txt (what make and CI install) pins each dependency inside pyproject's range."""
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    project = PYPROJECT["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(spec)
        pinned = pins.get(requirement.name.lower())
        assert pinned is not None, f"constraints.txt: no pin for {requirement.name}"
        assert requirement.specifier.contains(pinned), (
            f"constraints.txt: {requirement.name}=={pinned} is outside pyproject.toml's range "
            f"{requirement.specifier}")
