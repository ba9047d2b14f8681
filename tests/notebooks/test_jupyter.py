"""The setup installs Jupyter: JupyterLab opens notebooks/, nbconvert converts them (README, "Notebooks")."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
# The jupyter beside the interpreter that runs the tests: .venv/bin/jupyter under `make test`.
JUPYTER = Path(sys.executable).parent / "jupyter"


def _jupyter(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(JUPYTER), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(("command", "module"), [("lab", "jupyterlab"), ("nbconvert", "nbconvert")])
def test_jupyter_command_reports_its_installed_version(command: str, module: str) -> None:
    from importlib.metadata import version

    r = _jupyter(command, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == version(module)


def test_nbconvert_turns_a_notebook_into_its_code() -> None:
    path = sorted((ROOT / "notebooks").glob("*.ipynb"))[0]
    r = _jupyter("nbconvert", "--to", "script", "--stdout", str(path))
    assert r.returncode == 0, r.stderr
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert code and all(src in r.stdout for src in code)
