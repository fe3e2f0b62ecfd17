"""Generation for the benchmarks: the engine sees exactly one BOS, stop strings cut answers, a
rerun (also after kill -9) generates only the missing answers, with no duplicates and none lost,
sampling is seeded, and both decoding modes reach the engine: `as_configured` as generate's
sampling arguments (vLLM: SamplingParams), `reference` as alpaca-eval 0.6.2's beam search, checked
against a plain per-sequence replay of vLLM's steps."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.data.chat import encode_prompt
from simpo_recipes.evaluation import alpacaeval
from simpo_recipes.evaluation.generation import (
    AlpacaEvalBeam,
    GenerationSettings,
    _stops,
    from_recipe,
    generate,
    vllm_sampling,
)
from simpo_recipes.files import read_jsonl
from simpo_recipes.pipeline.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]

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


def test_same_command_samples_the_same_answers(models, tmp_path):
    sampled = GenerationSettings(max_new_tokens=12, batch_size=3, temperature=1.0)
    first = generate(tmp_path / "a.jsonl", models["llama3"], REQUESTS, sampled)
    torch.manual_seed(1234)  # whatever ran before in the process
    assert generate(tmp_path / "b.jsonl", models["llama3"], REQUESTS, sampled) == first
    other_seed = generate(tmp_path / "c.jsonl", models["llama3"], REQUESTS, GenerationSettings(
        max_new_tokens=12, batch_size=3, temperature=1.0, seed=7))
    assert [r["output"] for r in other_seed] != [r["output"] for r in first]  # the seed is what fixes them


def test_beam_keeps_searching_past_an_end_that_scores_worse():
    """Hand-computed: prompt of 4 tokens, EOS = 2. Step 1: EOS is the best token (greedy would stop
    with an empty answer), but finished -0.9/4 < running -1.0/5, so the search goes on; step 2 keeps
    the old finished one (-0.225 > -1.2/5); step 3 ends with -1.06/6, better than the running -4.05/7."""
    beam = AlpacaEvalBeam(prompt_len=4, eos_id=2, stop_ids=[2], max_new_tokens=10)
    beam.step([(2, -0.9), (7, -1.0)])
    assert not beam.done and beam.finished == ([2], -0.9) and beam.next_token == 7
    beam.step([(8, -0.05), (2, -0.2)])
    assert not beam.done and beam.finished == ([2], -0.9) and beam.running[0] == [7, 8]
    beam.step([(2, -0.01), (9, -3.0)])
    assert beam.done and beam.result() == [7, 8, 2]
    early = AlpacaEvalBeam(prompt_len=4, eos_id=2, stop_ids=[2], max_new_tokens=10)
    early.step([(2, -0.5), (7, -1.0)])  # -0.5/4 >= -1.0/5: stop at once
    assert early.done and early.result() == [2]
    capped = AlpacaEvalBeam(prompt_len=4, eos_id=2, stop_ids=[2], max_new_tokens=1)
    capped.step([(5, -0.1), (6, -0.2)])  # both children reach max_new_tokens: finished, nothing runs
    assert capped.done and capped.result() == [5]


def plain_beam(model, prompt: list[int], temperature: float, max_new: int, stop_ids: set, eos: int) -> list[int]:
    """vLLM <= 0.6.2's beam search of width 1 replayed one sequence at a time, full forward per step."""
    def score(tokens, cumulative):
        return cumulative / (len(prompt) + len(tokens) - (tokens[-1:] == [eos]))

    running, cumulative, best = [], 0.0, None
    while True:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + running])).logits[0, -1]
        values, indices = torch.log_softmax(logits.float() / temperature, -1).topk(2)
        children = [(running + [t], cumulative + v) for t, v in zip(indices.tolist(), values.tolist())]
        ends = [c[0][-1] in stop_ids or len(c[0]) == max_new for c in children]
        for child, ended in zip(children, ends):
            if ended and (best is None or score(*child) > score(*best)):
                best = child
        alive = [c for c, ended in zip(children, ends) if not ended]
        if not alive:
            return best[0]
        top = max(alive, key=lambda c: score(*c))
        if best is not None and score(*best) >= score(*top):
            return best[0]
        running, cumulative = top


@pytest.mark.parametrize("family", ["llama3", "gemma2"])
def test_reference_mode_is_alpaca_evals_beam_search_on_the_engine(models, family, tmp_path, monkeypatch):
    """`reference` never calls generate's sampler: its answers are the plain beam replay's, token for
    token, batched with left padding and a KV cache (Gemma-2: sliding-window layers); and they are
    not greedy's."""
    path = models[family]
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    stop_ids = set(model.generation_config.eos_token_id)
    calls = []
    monkeypatch.setattr(type(model), "generate", lambda self, **kw: calls.append(kw) or pytest.fail("sampled"))
    settings = GenerationSettings(max_new_tokens=10, batch_size=4, temperature=0.9, beam_search=True)
    rows = generate(tmp_path / "beam.jsonl", path, REQUESTS, settings)
    assert calls == []
    for request, row in zip(REQUESTS, rows):
        prompt = encode_prompt(tokenizer, request["messages"])
        expected = plain_beam(model, prompt, 0.9, 10, stop_ids, tokenizer.eos_token_id)
        end = next((k for k, t in enumerate(expected) if t in stop_ids), len(expected))
        assert row["output"] == tokenizer.decode(expected[:end], skip_special_tokens=True), request["id"]
    if family == "llama3":  # this model's top-2 holds its end of turn: the search and greedy part
        monkeypatch.undo()
        greedy = generate(tmp_path / "greedy.jsonl", path, REQUESTS, GenerationSettings(max_new_tokens=10, batch_size=4))
        assert [r["output"] for r in rows] != [r["output"] for r in greedy]


def test_as_configured_mode_reaches_generates_sampling_arguments(models, tmp_path, monkeypatch):
    recipe = load_recipe(REPO / "recipes/llama3-instruct.yaml")
    settings = from_recipe(recipe.generation, "as_configured", batch_size=8)
    assert not settings.beam_search and settings.temperature == 0.9
    seen = []
    original = AutoModelForCausalLM.from_pretrained(models["llama3"]).generate.__func__
    monkeypatch.setattr(type(AutoModelForCausalLM.from_pretrained(models["llama3"])), "generate",
                        lambda self, **kw: seen.append(kw) or original(self, **kw))
    generate(tmp_path / "a.jsonl", models["llama3"], REQUESTS[:2], replace(settings, max_new_tokens=4))
    assert [(k["do_sample"], k["max_new_tokens"]) for k in seen] == [(False, 4)]  # greedy over RowSampler's draw
    [sampler] = seen[0]["logits_processor"]
    assert (sampler.temperature, sampler.top_p, len(sampler.generators)) == (0.9, 1.0, 2)


def test_recipes_reference_modes_and_vllm_sampling_params():
    """The recipes whose reference configs set do_sample decode by beam search in `reference`
    mode; Mistral-Instruct's really sampled. The vLLM requests built for each mode."""
    beam = {"llama3-base", "llama3-instruct", "llama3-instruct-v0.2", "mistral-base", "gemma2-9b-it"}
    for name in beam | {"mistral-instruct", "tiny"}:
        generation = load_recipe(REPO / f"recipes/{name}.yaml").generation
        assert from_recipe(generation, "reference").beam_search == (name in beam), name
        assert not from_recipe(generation, "as_configured").beam_search
    llama = load_recipe(REPO / "recipes/llama3-instruct.yaml").generation
    reference, configured = from_recipe(llama, "reference"), from_recipe(llama, "as_configured")
    assert vllm_sampling(reference, 0.9, [128001, 128009], []) == {
        "max_tokens": 1, "logprobs": 2, "temperature": 0.9, "top_p": 1.0, "seed": 42}
    assert vllm_sampling(configured, 0.9, [128001, 128009], []) == {
        "temperature": 0.9, "top_p": 1.0, "max_tokens": 4096, "stop": [], "stop_token_ids": [128001, 128009], "seed": 42}
    assert vllm_sampling(reference, 0.0, [2], [])["temperature"] == 1.0  # vLLM's beam search below 1e-5
    with pytest.raises(ValueError, match="decoding mode"):
        from_recipe(llama, "sampled")


def test_mistral_base_alpaca_prompt_has_the_reference_empty_system_turn(models):
    """The reference prompt (SimPO eval/alpacaeval2/templates/mistral_base.txt) is
    `<s> <|system|>\\n</s>\\n<|user|>\\n{instruction}</s>\\n<|assistant|>\\n`."""
    generation = load_recipe(REPO / "recipes/mistral-base.yaml").generation
    [request] = alpacaeval.requests([{"instruction": "Name a color.", "output": ""}], generation.system_prompt)
    tokenizer = AutoTokenizer.from_pretrained(models["mistral"])
    import yaml

    tokenizer.chat_template = yaml.safe_load((REPO / "training_configs/mistral-base-sft.yaml").read_text())["chat_template"]
    ids = encode_prompt(tokenizer, request["messages"])
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids[1:]) == "<|system|>\n</s>\n<|user|>\nName a color.</s>\n<|assistant|>\n"
    assert alpacaeval.requests([{"instruction": "x", "output": ""}])[0]["messages"] == [{"role": "user", "content": "x"}]


def stand_in_vllm(monkeypatch, model_path):
    """vLLM is not installed here: a stand-in module with its interface (LLM.generate on
    TokensPrompt, SamplingParams, per-token logprobs with ranks), computing with the tiny model."""
    import types

    from simpo_recipes.evaluation.generation import processed_logprobs

    built = {"llm": [], "params": []}
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            built["params"].append(kwargs)

    class LLM:
        def __init__(self, **kwargs):
            built["llm"].append(kwargs)

        def generate(self, prompts, params, use_tqdm=True):
            k = params.kwargs
            outs = []
            for prompt in prompts:
                with torch.no_grad():
                    logits = model(torch.tensor([prompt["prompt_token_ids"]])).logits[0, -1]
                top = processed_logprobs(logits, k["temperature"], k["top_p"]).topk(k.get("logprobs") or 1)
                ranked = {t: types.SimpleNamespace(logprob=v, rank=r + 1)
                          for r, (t, v) in enumerate(zip(top.indices.tolist(), top.values.tolist()))}
                outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[], logprobs=[ranked])]))
            return outs

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return built


def test_vllm_backend_gets_each_modes_sampling_params(models, tmp_path, monkeypatch):
    """Reference mode on vLLM: one-token requests for the two best tokens with processed
    (temperature-scaled) log-probs, the same search, the same answers as on transformers;
    as_configured: one request per answer with the configured sampling."""
    path = models["llama3"]
    beam = GenerationSettings(max_new_tokens=10, batch_size=4, temperature=0.9, beam_search=True)
    on_transformers = generate(tmp_path / "t.jsonl", path, REQUESTS, replace(beam, backend="transformers"))
    built = stand_in_vllm(monkeypatch, path)
    on_vllm = generate(tmp_path / "v.jsonl", path, REQUESTS, replace(beam, backend="vllm"))
    assert [r["output"] for r in on_vllm] == [r["output"] for r in on_transformers]
    assert built["llm"][0]["logprobs_mode"] == "processed_logprobs"
    assert built["params"][0] == {"max_tokens": 1, "logprobs": 2, "temperature": 0.9, "top_p": 1.0, "seed": 42}
    built["params"].clear()
    sampled = GenerationSettings(max_new_tokens=10, batch_size=8, temperature=0.9, stop=("<|eot_id|>",), backend="vllm")
    generate(tmp_path / "s.jsonl", path, REQUESTS, sampled)
    [params] = built["params"]
    assert (params["temperature"], params["top_p"], params["max_tokens"], params["seed"]) == (0.9, 1.0, 10, 42)
    assert "logprobs" not in params and AutoTokenizer.from_pretrained(path).convert_tokens_to_ids("<|eot_id|>") in params[
        "stop_token_ids"]
