"""The repository keeps its promises: environments agree, notebooks are stripped and follow the
conventions, and the README shows the commands that really exist."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONDA_TO_PIP = {"pytorch-cpu": "torch"}


def pip_pins():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("-", "_")] = version
    return pins


def conda_pins():
    """Package -> version from environment.yml (conda `name=ver` and pip `name==ver` lines)."""
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.-]+)={1,2}([^=\s]+)\s*$", line)
        if m and m.group(1) != "python":
            name = CONDA_TO_PIP.get(m.group(1), m.group(1))
            pins[name.lower().replace("-", "_")] = m.group(2)
    return pins


def test_binder_environment_is_an_identical_copy():
    assert (ROOT / "binder/environment.yml").read_bytes() == (ROOT / "environment.yml").read_bytes()


def test_conda_and_pip_routes_pin_the_same_versions():
    assert conda_pins() == pip_pins()
    assert pip_pins()["torch"] == "2.13.0"


def test_conda_route_uses_conda_forge_only():
    text = (ROOT / "environment.yml").read_text()
    channels = re.search(r"channels:\n((?:\s+-.*\n)+)", text).group(1).split()
    assert [c for c in channels if c != "-"] == ["conda-forge", "nodefaults"]
    assert "pytorch-cpu" in text


def test_binder_postbuild_fails_loudly_and_installs_bnteach():
    lines = [ln for ln in (ROOT / "binder/postBuild").read_text().splitlines() if ln.strip()]
    body = [ln for ln in lines if not ln.startswith("#")]
    assert body[0] == "set -e"
    assert any("pip install --no-deps" in ln and ln.rstrip().endswith(" .") for ln in body)


def test_readme_shows_the_two_commands_and_binder_deep_link():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "urlpath=lab/tree/notebooks/00_start_here.ipynb" in readme
    assert "conda env create -f environment.yml" in readme
    for nb in NOTEBOOKS:
        if not nb.stem.endswith("_solutions"):
            assert nb.name in readme, f"README's notebook table misses {nb.name}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:", makefile, re.M) and re.search(r"^lab:", makefile, re.M)
    assert "notebooks/00_start_here.ipynb" in makefile
    assert "--nbval-lax" in makefile and "--dist loadscope" in makefile


def test_there_are_notebooks():
    names = [nb.stem for nb in NOTEBOOKS]
    for expected in ("00_start_here", "01_data", "02_models", "04_comparison"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_follows_conventions(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "strip outputs"
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    intro = "".join(first["source"])
    assert intro.startswith("# "), "first cell starts with a title"
    assert re.search(r"\d+\s*min", intro), "first cell states a time estimate"
    assert "learn" in intro.lower(), "first cell says what you will learn"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "torch.set_num_threads(1)" in source
    assert "import *" not in source
    if "torch.nn" in source or "bnteach.models" in source:
        assert "torch.manual_seed" in source
        assert "cuda" in source, "pick CUDA when available"
    for cell in code:
        tags = cell.get("metadata", {}).get("tags", [])
        if "nbval-skip" in tags or "skip-execution" in tags:
            assert {"nbval-skip", "skip-execution"} <= set(tags)


def test_a_plain_install_ships_every_module(tmp_path):
    """Binder's postBuild installs bnteach non-editable: the wheel must hold every module.

    Built from a clean copy, so that a stale build/ folder cannot fill in missing packages.
    """
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "bnteach", src / "bnteach", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("bnteach-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bnteach").rglob("*.py")}
    assert source <= shipped, f"missing from the wheel: {sorted(source - shipped)}"


def test_lab_settings_override_is_installed_by_both_routes():
    """No "Jupyter news" pop-up covering the widgets, for make lab and for Binder."""
    settings = json.loads((ROOT / "binder/overrides.json").read_text())
    notification = settings["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}
    assert "binder/overrides.json" in (ROOT / "Makefile").read_text()
    assert "binder/overrides.json" in (ROOT / "binder/postBuild").read_text()
