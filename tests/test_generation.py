"""Generation for the benchmarks: the engine sees exactly one BOS, stop strings cut answers, and a
rerun (also after kill -9) generates only the missing answers, with no duplicates and none lost."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.data.chat import encode_prompt
from simpo_recipes.evaluation.generation import GenerationSettings, _stops, generate
from simpo_recipes.files import read_jsonl

TEXTS = ["Sort the digits 3 1 2.", "1 2 3", "Reverse the word cat.", "tac", "What is 2 plus 2?", "4"] * 20
REQUESTS = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]} for i in range(7)]
GREEDY = GenerationSettings(max_new_tokens=12, batch_size=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: build_tiny_model(family, root / family, TEXTS, vocab_size=300, hidden_size=32, seed=3)
            for family in ("llama3", "mistral", "gemma2")}


@pytest.mark.parametrize("family", ["llama3", "mistral", "gemma2"])
def test_engine_answers_from_the_one_bos_prompt(models, family, tmp_path):
    """Mistral and Gemma-2 add BOS from both template and tokenizer: the answers must be the greedy
    continuation of encode_prompt's ids (one BOS), not of the double-BOS text encoding."""
    path = models[family]
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    messages = REQUESTS[2]["messages"]
    one_bos = encode_prompt(tokenizer, messages)
    text_ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)).input_ids
    assert one_bos.count(tokenizer.bos_token_id) == 1 and one_bos[0] == tokenizer.bos_token_id
    if family != "llama3":
        assert text_ids.count(tokenizer.bos_token_id) == 2  # the trap the engine must not fall into

    def greedy(ids):
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        return out[0, len(ids):].tolist()

    row = generate(tmp_path / "answers.jsonl", path, [REQUESTS[2]], GREEDY)[0]
    new = greedy(one_bos)
    stop_ids = set(model.generation_config.eos_token_id)
    end = next((k for k, t in enumerate(new) if t in stop_ids), len(new))
    assert row["output"] == tokenizer.decode(new[:end], skip_special_tokens=True) and row["n_tokens"] == end
    if family != "llama3":
        assert greedy(text_ids) != new  # the double BOS really changes the answer of this model


def test_stop_strings_cut_the_answer(models, tmp_path):
    plain = generate(tmp_path / "a.jsonl", models["llama3"], REQUESTS[:3], GREEDY)
    text = next(r["output"] for r in plain if len(r["output"]) > 6)
    stop = text[3:6]
    stopped = generate(tmp_path / "b.jsonl", models["llama3"], REQUESTS[:3], GenerationSettings(
        max_new_tokens=12, batch_size=3, stop=(stop,)))
    for before, after in zip(plain, stopped):
        assert after["output"] == before["output"].split(stop)[0]


def test_rerun_generates_only_missing_rows(models, tmp_path):
    path = tmp_path / "answers.jsonl"
    first = generate(path, models["llama3"], REQUESTS[:4], GREEDY)
    rows = read_jsonl(path)
    next(r for r in rows if r["id"] == "q0")["output"] = "SENTINEL"  # reused: kept; regenerated: not
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = generate(path, models["llama3"], REQUESTS, GREEDY)
    assert second[0]["output"] == "SENTINEL" and second[1:4] == first[1:4]
    assert sorted(r["id"] for r in read_jsonl(path)) == sorted(r["id"] for r in REQUESTS)  # no duplicates
    changed_prompt = [dict(REQUESTS[0], messages=[{"role": "user", "content": "Something else?"}])]
    assert generate(path, models["llama3"], changed_prompt, GREEDY)[0]["output"] != "SENTINEL"
    sampled = generate(path, models["llama3"], REQUESTS[1:2], GenerationSettings(max_new_tokens=12, temperature=1.0))
    assert len(read_jsonl(path)) == 1 and sampled[0]["id"] == "q1"  # other settings: nothing reused
    assert not list(tmp_path.glob(".*.tmp"))


KILLED_REQUESTS = [{"id": str(i), "messages": [{"role": "user", "content": f"Sort the digits {i} 1 2."}]}
                   for i in range(40)]
CHILD = f"""
import sys
from simpo_recipes.evaluation.generation import GenerationSettings, _stops, generate
generate(sys.argv[1], sys.argv[2], {KILLED_REQUESTS!r}, GenerationSettings(max_new_tokens=24, batch_size=1))
"""


@pytest.mark.slow
def test_kill_during_generation_then_rerun_loses_and_duplicates_nothing(models, tmp_path):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    killed, clean = tmp_path / "killed.jsonl", tmp_path / "clean.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(killed), str(models["llama3"])], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or len(read_jsonl(killed)) < 3):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial = len(read_jsonl(killed))
    assert 3 <= partial < 40, partial
    subprocess.run([sys.executable, "-c", CHILD, str(killed), str(models["llama3"])], env=env, check=True)
    generate(clean, models["llama3"], KILLED_REQUESTS, GenerationSettings(max_new_tokens=24, batch_size=1))
    by_id = {r["id"]: r for r in read_jsonl(killed)}
    assert len(by_id) == len(read_jsonl(killed)) == 40  # none lost, none twice
    assert by_id == {r["id"]: r for r in read_jsonl(clean)}  # the same answers as an uninterrupted run


def test_settings_are_validated():
    with pytest.raises(ValueError, match="backend"):
        GenerationSettings(backend="tgi")
    with pytest.raises(ValueError):
        GenerationSettings(top_p=0)
    assert GenerationSettings(stop=["<|eot_id|>"]).stop == ("<|eot_id|>",)


def test_special_token_stop_strings_become_stop_ids(models, real_tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(models["llama3"])
    eot, end = tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert _stops(tokenizer, [eot], ("<|end_of_text|>", "###")) == ([eot, end], ["###"])
    assert _stops(tokenizer, None, ()) == ([tokenizer.eos_token_id], [])
    # the real Llama-3 tokenizer: transformers 5 leaves <|eot_id|> out of all_special_ids
    llama3 = real_tokenizer("llama3")
    assert _stops(llama3, None, ("<|end_of_text|>", "<|eot_id|>"))[0][-2:] == [128001, 128009]
