"""The package declares what requirements.txt pins, this environment has exactly those versions,
and the lint gate of `make test` (ruff, configured in pyproject.toml) is a real one."""
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    requirements = [Requirement(line) for line in lines]
    return {r.name.lower(): str(r.specifier) for r in requirements}


def test_pyproject_declares_the_pins_of_requirements_txt():
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    pinned = pins(line for line in lines if line and not line.startswith("-e"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra])
    assert declared == pinned
    assert set(project["optional-dependencies"]) == {"tracking", "dev"}


def test_this_environment_has_the_pinned_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"] + project["optional-dependencies"]["tracking"]):
        installed = version(requirement.name)
        if requirement.name != "torch":  # a local CPU build: 2.13.0+cpu
            assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)


def test_lint_gate_flags_what_it_should(tmp_path):
    """The repository passes; a file with an unused import, a mutable default and an unsorted import
    block does not (the rule set is not empty)."""
    ruff = [sys.executable, "-m", "ruff", "check", "--config", str(REPO / "pyproject.toml")]
    clean = subprocess.run(ruff + [str(REPO)], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout[-3000:]
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\n\ndef f(x=[]):\n    return os.sep\n")
    found = subprocess.run(ruff + ["--output-format", "concise", str(bad)], capture_output=True, text=True)
    assert found.returncode == 1
    assert {"F401", "B006", "I001"} <= {part.split()[0] for part in found.stdout.split(": ")[1:]}
