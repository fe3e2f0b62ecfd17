"""`make demo`, the README's main command, end to end on a copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_shows_simpo_ahead_of_sft(tmp_path):
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in tracked.stdout.split():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    venv = Path(sys.prefix)
    # -o: the running virtualenv is the installed one; never reinstall from the copy
    result = subprocess.run(["make", "demo", f"VENV={venv}", "-o", f"{venv}/.installed"], cwd=tmp_path,
                            env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| simpo |" in result.stdout and "win rate vs sft" in result.stdout
    results = json.loads((tmp_path / "outputs/tiny/eval/results.json").read_text())
    sft, simpo = results["models"]["sft"], results["models"]["simpo"]
    assert simpo["accuracy"] >= sft["accuracy"] + 0.25, (sft, simpo)
    assert simpo["win_rate_vs_baseline"] >= 0.7
    for png in ("outputs/tiny/eval/results.png", "outputs/tiny/sft/training_curves.png",
                "outputs/tiny/simpo/training_curves.png"):
        assert (tmp_path / png).stat().st_size > 10_000, png
