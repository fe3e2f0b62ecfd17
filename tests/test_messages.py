"""Every script ends a problem the user can fix with one clear message and exit status 2, never
a traceback: unusable output folders (a file in the way, no permission, a full disk), empty or
malformed data, a missing held-out file or model folder (not answered with hub advice)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.config.arguments import ConfigError
from simpo_recipes.config.parsing import parse_config
from simpo_recipes.training.runtime import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
UNWRITABLE = "/sys/simpo-test-output"  # not writable, not even by root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("messages")
    (root / "data/sft").mkdir(parents=True)
    (root / "data/sft/train.jsonl").write_text('{"messages": [{"role": "user", "content": "1 2"}, '
                                               '{"role": "assistant", "content": "3"}]}\n' * 8)
    (root / "data/empty").mkdir()
    (root / "data/empty/train.jsonl").write_text("\n")
    (root / "heldout.jsonl").write_text('{"prompt_id": "p0", "instruction": "Sort 2 1", "task": "sort"}\n')
    (root / "bad_heldout.jsonl").write_text('{"instruction": "Sort 2 1"}\n')
    build_tiny_model("llama3", root / "model", ["1 2 3"] * 20, vocab_size=280, hidden_size=16, num_layers=1)
    (root / "a_file").write_text("in the way")
    full = root / "full"
    full.mkdir()
    for name in (".run.json.tmp", "run_config.yaml"):  # every write there hits a full disk
        (full / name).symlink_to("/dev/full")
    return root


def sft(data="data/sft", output_dir="out", *extra):
    return [str(REPO / "scripts/run_sft.py"), str(REPO / "training_configs/tiny-sft.yaml"), "--model_name_or_path=model",
            f"--dataset_mixer={{{data}: 1.0}}", "--dataset_splits=[train]", f"--output_dir={output_dir}", *extra]


CASES = {
    "output_dir is a file": (sft(output_dir="a_file"), "output_dir a_file cannot be used: File exists"),
    "output_dir unwritable": (sft(output_dir=UNWRITABLE), f"output_dir {UNWRITABLE} cannot be used"),
    "disk full": (sft(output_dir="full"), "No space left on device (the disk is full"),
    "empty data file": (sft(data="data/empty", output_dir="o1"), "train.jsonl: no rows"),
    "held-out file missing": ([str(REPO / "scripts/evaluate_demo.py"), "--models", "a=model", "b=model",
                               "--heldout", "nope.jsonl", "--output_dir", "eval"], "held-out prompts nope.jsonl: no such"),
    "held-out row without its fields": ([str(REPO / "scripts/evaluate_demo.py"), "--models", "a=model", "--heldout",
                                         "bad_heldout.jsonl", "--output_dir", "eval"],
                                        "bad_heldout.jsonl row 1: needs prompt_id and instruction"),
    "model folder missing": ([str(REPO / "scripts/evaluate_demo.py"), "--models", "a=nope", "--heldout",
                              "heldout.jsonl", "--output_dir", "eval"], "no model in nope (no config.json)"),
    "demo data into a file": ([str(REPO / "scripts/make_demo_data.py"), "--output_dir", "a_file/demo"],
                              "a file is in the way"),
    "tiny model from missing data": ([str(REPO / "scripts/build_tiny_model.py"), "--family", "llama3", "--output_dir",
                                      "m2", "--data", "nope.jsonl"], "--data nope.jsonl: no such file"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_one_clear_message(workspace, case):
    argv, message = CASES[case]
    result = subprocess.run([sys.executable, *argv], cwd=workspace, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr[-3000:]
    assert "huggingface-cli download" not in result.stderr


def test_a_missing_local_model_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("model_name_or_path: outputs/sft\ndataset_mixer: {d: 1.0}\noutput_dir: o\n")
    model_args, data_args, _, _ = parse_config("sft", [str(config), "--use_cpu=true"])
    with pytest.raises(ConfigError, match="'outputs/sft': no such model folder here") as error:
        load_tokenizer(model_args, data_args)
    assert "download" not in str(error.value)
