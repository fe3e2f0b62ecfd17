"""On-policy preference data: seeded samples keyed by (prompt_id, seed), reward models (a tiny
random-init sequence-classification model, a pairwise ranker, a judge on loopback, the demo's
program), binarisation filters, resume after kill -9, and the preference stage reading the result."""
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

from simpo_demo.task import judge, write_demo_data
from simpo_demo.tiny_models import build_tiny_model, build_tiny_reward_model
from simpo_recipes.config.parsing import build, read_yaml
from simpo_recipes.data.chat import encode_conversation
from simpo_recipes.data.loading import PREFERENCE_COLUMNS, load_mixture
from simpo_recipes.data.preprocess import prepare_preferences
from simpo_recipes.errors import ConfigError
from simpo_recipes.evaluation.generation import GenerationSettings, RowSampler, generate
from simpo_recipes.files import read_appended_jsonl, read_jsonl
from simpo_recipes.onpolicy import pipeline, reward_models
from simpo_recipes.onpolicy.binarise import COLUMNS, binarise
from simpo_recipes.onpolicy.config import OnPolicyConfig, RewardModelConfig
from simpo_recipes.onpolicy.reward_models import (
    RewardModelError,
    _Classifier,
    aggregate_pairwise,
    load_reward_model,
    pair_text,
)
from simpo_recipes.pipeline.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
STOP = ("<|end_of_text|>", "<|eot_id|>")


def _teach_to_stop(path: Path, conversations: list[list[dict]], steps: int = 60) -> None:
    """A few steps of next-token training on short answers, so the tiny policy ends its turns."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    encoded = [encode_conversation(tokenizer, c) for c in conversations]
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        batch = [encoded[(step * 8 + k) % len(encoded)] for k in range(8)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([[t if m else -100 for t, m in zip(i, mask)] + [-100] * (width - len(i))
                               for i, mask in batch])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("onpolicy")
    demo = write_demo_data(root / "demo", n_sft=64, n_prefs=6, n_heldout=1, n_test=3)
    texts = [line for p in demo.values() for line in p.read_text().splitlines()]
    policy = build_tiny_model("llama3", root / "policy", texts, vocab_size=300, hidden_size=32, seed=1)
    _teach_to_stop(policy, [r["messages"] for r in read_jsonl(demo["sft_train"])])
    rm = build_tiny_reward_model(root / "rm", texts, vocab_size=300, hidden_size=32, seed=2)
    config = OnPolicyConfig(
        reward_model=RewardModelConfig(type="sequence_classification", name=str(rm), batch_size=4),
        output_dir=str(root / "out"), model=str(policy), prompts=str(root / "demo" / "prefs"),
        splits={"train": "train", "test": "test"}, seeds=[13, 21, 42], temperature=1.0, max_new_tokens=20,
        batch_size=4)
    return {"root": root, "policy": policy, "rm": rm, "config": config}


REQUESTS = [{"id": f"p{i}:{seed}", "messages": [{"role": "user", "content": f"Reverse this list: {i} 2 5"}],
             "seed": seed} for i in range(4) for seed in (13, 21, 42)]


def test_a_sample_depends_on_its_prompt_and_seed_only(ws, tmp_path):
    """Batch size, request order and a rerun do not change a sample; its seed does."""
    settings = GenerationSettings(max_new_tokens=12, temperature=1.0, top_p=0.95, stop=STOP, batch_size=5)
    first = generate(tmp_path / "a.jsonl", ws["policy"], REQUESTS, settings)
    alone = generate(tmp_path / "b.jsonl", ws["policy"], REQUESTS[::-1], replace(settings, batch_size=1))
    assert {r["id"]: r["output"] for r in first} == {r["id"]: r["output"] for r in alone}
    by_prompt = {}
    for r in first:
        by_prompt.setdefault(r["id"].split(":")[0], set()).add(r["output"])
    assert any(len(outputs) > 1 for outputs in by_prompt.values())  # the seeds give different samples
    assert sum(not r["truncated"] for r in first) >= 6  # the policy ends its turns
    lines = (tmp_path / "a.jsonl").read_text()
    assert generate(tmp_path / "a.jsonl", ws["policy"], REQUESTS, settings) == first
    assert (tmp_path / "a.jsonl").read_text() == lines  # nothing generated twice
    # requests without a seed (the benchmarks') use the settings' seed: two runs answer alike
    unseeded = [{k: v for k, v in r.items() if k != "seed"} for r in REQUESTS[::3]]
    runs = [generate(tmp_path / f"run{k}.jsonl", ws["policy"], unseeded, settings) for k in range(2)]
    assert [r["output"] for r in runs[0]] == [r["output"] for r in runs[1]]


def test_truncated_means_the_token_limit_came_before_an_end_of_turn(ws, tmp_path):
    settings = GenerationSettings(max_new_tokens=6, temperature=1.0, stop=STOP, batch_size=6)
    rows = generate(tmp_path / "a.jsonl", ws["policy"], REQUESTS, settings)
    assert {r["truncated"] for r in rows} == {True, False}
    assert all(r["truncated"] == (r["n_tokens"] == 6) for r in rows)  # n_tokens excludes the end of turn


def test_row_sampler_draws_from_the_tempered_top_p_distribution():
    """The oracle: transformers' own temperature and top-p warpers."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    scores = torch.randn(3, 50) * 3
    reference = torch.softmax(TopPLogitsWarper(0.9)(None, TemperatureLogitsWarper(0.7)(None, scores.clone())), -1)
    sampler = RowSampler([1, 2, 3], temperature=0.7, top_p=0.9, device="cpu")
    picked = sampler(None, scores)
    tokens = picked.argmax(-1)
    assert torch.isfinite(picked).sum(-1).tolist() == [1, 1, 1]
    assert all(reference[i, t] > 0 for i, t in enumerate(tokens.tolist()))  # inside the nucleus
    counts = torch.zeros(50)
    for seed in range(4000):
        counts[RowSampler([seed], 0.7, 0.9, "cpu")(None, scores[:1]).argmax()] += 1
    assert torch.allclose(counts / 4000, reference[0], atol=0.03)


def test_appended_file_loses_only_a_cut_off_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "key": "1"}\n{"id": "b", "ke')  # kill -9 in mid-write
    assert read_appended_jsonl(path) == [{"id": "a", "key": "1"}]
    assert path.read_text() == '{"id": "a", "key": "1"}\n'  # the next append starts on a whole line


def test_batched_scores_equal_one_at_a_time(ws):
    config = RewardModelConfig(type="sequence_classification", name=str(ws["rm"]), batch_size=4)
    batched, single = _Classifier(config), _Classifier(replace(config, batch_size=1))
    sequences = [[5, 6, 7], [8, 9], [5, 6, 7, 8, 9, 10, 11], [12, batched.pad, 13], list(range(20, 26))]
    a, b = batched(sequences), single(sequences)
    assert a == pytest.approx(b, abs=1e-5) and None not in a
    short = _Classifier(replace(config, max_length=4))
    assert short(sequences)[2] is None and short(sequences)[4] is None  # never cut: left unscored


def test_a_checkpoint_without_a_trained_head_is_refused(ws):
    with pytest.raises(RewardModelError, match="not in the checkpoint"):
        load_reward_model(RewardModelConfig(type="sequence_classification", name=str(ws["policy"])))


CUSTOM_CODE = '''
from dataclasses import dataclass
import torch
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class ScoreOutput(ModelOutput):
    score: torch.Tensor = None


class ScoreModel(LlamaPreTrainedModel):
    """ArmoRM-like: a head of its own (`regression`) and an output with `score`, not `logits`."""

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression = torch.nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(-1) - 1
        return ScoreOutput(score=10 * self.regression(hidden[torch.arange(len(last)), last])[:, 0])
'''


def _custom_code_reward_model(source: Path, folder: Path) -> Path:
    """The tiny reward model with ArmoRM's shape: its own model code, head and output."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    (folder / "modeling_score.py").write_text(CUSTOM_CODE)
    weights = load_file(folder / "model.safetensors")
    weights["regression.weight"] = weights.pop("score.weight")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config |= {"architectures": ["ScoreModel"],  # as ArmoRM's: a llama config naming its own model class
               "auto_map": {"AutoModelForSequenceClassification": "modeling_score.ScoreModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_custom_model_code_runs_only_when_the_config_says_so(ws, tmp_path):
    folder = _custom_code_reward_model(ws["rm"], tmp_path / "custom_rm")
    rm_config = RewardModelConfig(type="sequence_classification", name=str(folder))
    with pytest.raises(RewardModelError, match="trust_remote_code: true"):
        load_reward_model(rm_config)  # transformers' own Llama class would leave the head random
    custom = load_reward_model(replace(rm_config, trust_remote_code=True))
    plain = load_reward_model(RewardModelConfig(type="sequence_classification", name=str(ws["rm"])))
    prompts, answers = ["Reverse this list: 1 2"], [["2 1", "1 2 3"]]
    assert custom.score(prompts, answers)[0] == pytest.approx([10 * s for s in plain.score(prompts, answers)[0]])


def test_pairwise_scores_are_mean_win_probabilities_in_both_orders(ws):
    p = {(0, 1): 0.9, (1, 0): 0.3, (0, 2): 0.6, (2, 0): 0.6, (1, 2): None, (2, 1): 0.5}
    assert aggregate_pairwise(3, p) == pytest.approx([((0.9 + 0.7) / 2 + (0.6 + 0.4) / 2) / 2, (0.3 + 0.1) / 2,
                                                      (0.6 + 0.4) / 2])
    config = RewardModelConfig(type="pairwise", name=str(ws["rm"]), batch_size=3)
    ranker = load_reward_model(config)
    prompt, answers = "Reverse this list: 3 1", ["1 3", "3 1", "1 3"]
    logits = _Classifier(config)([ranker.classifier.tokenizer(pair_text(prompt, answers[i], answers[j])).input_ids
                                  for i in range(3) for j in range(3) if i != j])
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    expected = aggregate_pairwise(3, {pair: float(torch.sigmoid(torch.tensor(x))) for pair, x in zip(pairs, logits)})
    scores = ranker.score([prompt], [answers])[0]
    assert scores == pytest.approx(expected, abs=1e-6) and scores[0] == pytest.approx(scores[2])


def test_judge_reward_rates_through_an_openai_compatible_endpoint(monkeypatch, tmp_path):
    from simpo_recipes.evaluation.local_judge import ProgramJudge

    rows = read_jsonl(write_demo_data(tmp_path / "demo", n_sft=1, n_prefs=2, n_heldout=1, n_test=1)["prefs_train"])
    prompts = [{"prompt_id": r["prompt_id"], "prompt": r["prompt"]} for r in rows]
    samples = {r["prompt_id"]: [{"output": r["chosen"][-1]["content"]}, {"output": r["rejected"][-1]["content"]}]
               for r in rows}
    key = "sk-test-not-on-disk"
    with ProgramJudge(lambda q, a, b: 0.5, rate=lambda q, a: 10 if judge({"prompt": q}, a) else 1,
                      api_key=key) as server:
        monkeypatch.setenv("JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("JUDGE_API_KEY", key)
        monkeypatch.setenv("JUDGE_MODEL", "program-judge")
        config = RewardModelConfig(type="judge", name="gpt-4", batch_size=2)
        scores = reward_models.score_samples(tmp_path / "scores.jsonl", config, prompts, samples)
        assert server.calls["mt_bench"] == 4
    assert scores == {p["prompt_id"]: [10.0, 1.0] for p in prompts}
    assert all(key not in f.read_text() for f in tmp_path.glob("*.json*"))
    assert json.loads((tmp_path / "scores.meta.json").read_text())["model"] == "program-judge"


def _sample(output, truncated=False):
    return {"output": output, "truncated": truncated}


def test_binarise_drops_and_counts_what_cannot_be_a_pair():
    cases = {  # prompt: (samples, scores, expected: reason or (chosen, rejected))
        "identical": ([_sample("a"), _sample("a "), _sample("a")], [1.0, 2.0, 3.0], "all samples identical"),
        "tie": ([_sample("a"), _sample("b"), _sample("c")], [2.0, 2.0, 2.0], "best and worst scores tie"),
        "truncated best": ([_sample("a", True), _sample("b"), _sample("c")], [3.0, 1.0, 2.0], "chosen truncated"),
        "truncated worst": ([_sample("a"), _sample("b", True), _sample("c")], [3.0, 1.0, 2.0], "rejected truncated"),
        "unscored": ([_sample("a"), _sample("b"), _sample("c")], [None, 1.0, None], "fewer than 2 samples scored"),
        "empty": ([_sample("a"), _sample(" "), _sample("c")], [3.0, 1.0, 2.0], "empty response"),
        "kept": ([_sample("a"), _sample("b"), _sample("c"), _sample("d")], [2.0, 5.0, 1.0, 5.0], ("b", "c")),
        "kept despite a truncated middle": ([_sample("a"), _sample("b", True), _sample("c")], [3.0, 2.0, 1.0],
                                            ("a", "c")),
    }
    prompts = [{"prompt_id": name, "prompt": f"question {name}"} for name in cases]
    result = binarise(prompts, {n: c[0] for n, c in cases.items()}, {n: c[1] for n, c in cases.items()})
    expected_drops = sorted(c[2] for c in cases.values() if isinstance(c[2], str))
    assert sorted(r for r, n in result["dropped"].items() for _ in range(n)) == expected_drops
    kept = {r["prompt_id"]: r for r in result["rows"]}
    assert {n: (r["chosen"][-1]["content"], r["rejected"][-1]["content"]) for n, r in kept.items()} == {
        "kept": ("b", "c"), "kept despite a truncated middle": ("a", "c")}  # equal best: the first in seed order
    assert result["margins"] == [4.0, 2.0] and result["truncated_samples"] == 3
    row = kept["kept"]
    assert tuple(row) == COLUMNS and row["chosen"][0] == {"role": "user", "content": "question kept"}
    assert row["all_generated_responses"] == ["a", "b", "c", "d"] and row["all_rm_scores"] == [2.0, 5.0, 1.0, 5.0]


def test_pipeline_writes_the_released_schema_the_preference_stage_reads(ws, monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    config = ws["config"]
    report = pipeline.run(config, config.model, STOP)
    out = Path(config.output_dir)
    train, test = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
    for split, rows in (("train", train), ("test", test)):
        s = report["splits"][split]
        assert s["prompts"] == (6 if split == "train" else 3) and s["kept"] == len(rows)
        assert s["kept"] + sum(s["dropped"].values()) == s["prompts"]
    assert train and all(tuple(r) == COLUMNS for r in train + test)
    samples = {r["id"]: r for r in read_jsonl(out / "samples" / "train.jsonl")}
    for row in train:
        responses = [samples[f"{row['prompt_id']}:{seed}"]["output"] for seed in config.seeds]
        assert row["all_generated_responses"] == responses  # matched by (prompt_id, seed)
        scores = row["all_rm_scores"]
        assert row["chosen"][-1]["content"] == responses[scores.index(max(scores))]
        assert row["rejected"][-1]["content"] == responses[scores.index(min(scores))]
    assert (out / "margins.png").stat().st_size > 10_000 and "| train | 6 |" in (out / "report.md").read_text()

    # read unchanged by the preference stage, every row kept
    data = load_mixture({str(out): 1.0}, ["train", "test"], PREFERENCE_COLUMNS, seed=42)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    assert len(prepare_preferences(data["train"], tokenizer, 256, 128, 0.0, "train")) == len(train)

    # a rerun samples and scores nothing again, and rewrites the same dataset
    monkeypatch.setattr(reward_models, "load_reward_model", lambda c: pytest.fail("scored twice"))
    monkeypatch.setattr("simpo_recipes.evaluation.generation._Engine", lambda *a: pytest.fail("sampled twice"))
    before = (out / "train.jsonl").read_bytes()
    pipeline.run(config, config.model, STOP)
    assert (out / "train.jsonl").read_bytes() == before


def test_program_reward_is_the_demo_judge(tmp_path):
    demo = write_demo_data(tmp_path / "demo", n_sft=1, n_prefs=3, n_heldout=1, n_test=1)
    rows = read_jsonl(demo["prefs_train"])
    rm = load_reward_model(RewardModelConfig(type="program", name="simpo_demo.task:reward"))
    scores = rm.score([r["prompt"] for r in rows], [[r["chosen"][-1]["content"], r["rejected"][-1]["content"]]
                                                    for r in rows])
    assert scores == [[1.0, 0.0]] * 3
    with pytest.raises(RewardModelError, match="cannot import"):
        load_reward_model(RewardModelConfig(type="program", name="simpo_demo.task:no_such_function"))


def test_recipes_carry_the_papers_onpolicy_settings():
    for name in ("llama3-instruct", "llama3-instruct-v0.2", "gemma2-9b-it", "mistral-instruct"):
        recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
        block = recipe.onpolicy
        assert (block.seeds, block.temperature, block.top_p, block.max_new_tokens) == ([13, 21, 42, 79, 100], 0.8,
                                                                                       0.95, 4096)
        assert block.prompts == "HuggingFaceH4/ultrafeedback_binarized"
        assert block.splits == {"train": "train_prefs", "test": "test_prefs"}
        armo = name in ("llama3-instruct-v0.2", "gemma2-9b-it")
        assert block.reward_model.name == ("RLHFlow/ArmoRM-Llama3-8B-v0.1" if armo else "llm-blender/PairRM")
        assert block.reward_model.trust_remote_code is armo  # only where the recipe says so
        assert pipeline.policy_model(recipe, block) == read_yaml(recipe.stages[-1].config)["model_name_or_path"]
    assert RewardModelConfig(type="sequence_classification", name="x").trust_remote_code is False


def test_bad_onpolicy_settings_name_the_key():
    rm = {"type": "program", "name": "simpo_demo.task:reward"}
    with pytest.raises(ConfigError, match="listed twice"):
        build({"reward_model": rm, "output_dir": "o", "seeds": [1, 1]}, (OnPolicyConfig,), "x")
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        build({"reward_model": rm, "output_dir": "o", "seed": [1, 2]}, (OnPolicyConfig,), "x")
    with pytest.raises(ConfigError, match=r"reward_model\.type"):
        build({"reward_model": {"type": "pairrm", "name": "x"}, "output_dir": "o"}, (OnPolicyConfig,), "x")
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build({"reward_model": rm, "output_dir": "o", "temperature": 0}, (OnPolicyConfig,), "x")


def test_script_overrides_the_recipe_block():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from make_onpolicy import resolve
    finally:
        sys.path.pop(0)
    recipe, config, step = resolve([str(REPO / "recipes/tiny.yaml"), "--seeds=[1,2]", "--reward_model.batch_size=3",
                                    "--step=score"])
    assert (config.seeds, config.reward_model.batch_size, step) == ([1, 2], 3, "score")
    assert pipeline.policy_model(recipe, config) == "outputs/tiny/sft"
    with pytest.raises(ConfigError, match="unknown key 'seed'"):
        resolve([str(REPO / "recipes/tiny.yaml"), "--seed=1"])


CHILD = """
import sys
from simpo_recipes.onpolicy import pipeline
from simpo_recipes.onpolicy.config import OnPolicyConfig, RewardModelConfig
config = OnPolicyConfig(**{**{k: v for k, v in %r.items() if k != "reward_model"},
                           "reward_model": RewardModelConfig(**%r), "output_dir": sys.argv[1]})
pipeline.run(config, config.model, %r)
"""


@pytest.mark.slow
def test_kill_during_sampling_and_scoring_then_rerun_loses_and_duplicates_nothing(ws, tmp_path):
    from dataclasses import asdict

    config = replace(ws["config"], batch_size=1, reward_model=replace(ws["config"].reward_model, batch_size=1))
    block = asdict(config)
    child = CHILD % (block, block["reward_model"], STOP)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    def run_until(path: Path, lines: int) -> None:
        proc = subprocess.Popen([sys.executable, "-c", child, str(killed)], env=env)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and (
                not path.exists() or len(path.read_text().splitlines()) < lines):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    run_until(killed / "samples" / "train.jsonl", 4)  # 18 train samples, one per batch
    assert 4 <= len(read_jsonl(killed / "samples" / "train.jsonl")) < 18
    run_until(killed / "scores" / "train.jsonl", 2)  # 6 train prompts, one per call
    assert 2 <= len(read_appended_jsonl(killed / "scores" / "train.jsonl")) < 6
    subprocess.run([sys.executable, "-c", child, str(killed)], env=env, check=True)
    pipeline.run(replace(config, output_dir=str(clean)), config.model, STOP)
    for part in ("samples/train", "samples/test", "scores/train", "scores/test"):
        rows = read_jsonl(killed / f"{part}.jsonl")
        field = "id" if part.startswith("samples") else "prompt_id"
        assert len({r[field] for r in rows}) == len(rows)  # none twice
        assert {r[field]: r for r in rows} == {r[field]: r for r in read_jsonl(clean / f"{part}.jsonl")}  # none lost
    for split in ("train", "test"):
        assert (killed / f"{split}.jsonl").read_bytes() == (clean / f"{split}.jsonl").read_bytes()


@pytest.mark.slow
def test_make_onpolicy_runs_an_armorm_recipe_on_tiny_models(ws, tmp_path):
    """`make onpolicy MODEL=llama3-instruct-v0.2` with only model, prompts, reward model folder, sizes
    and output overridden: UltraFeedback's split names, and trust_remote_code from the recipe alone."""
    import shutil

    from conftest import run_make

    prompts = tmp_path / "ultrafeedback"
    prompts.mkdir()
    for split in ("train", "test"):
        shutil.copy(ws["root"] / "demo" / "prefs" / f"{split}.jsonl", prompts / f"{split}_prefs.jsonl")
    rm = _custom_code_reward_model(ws["rm"], tmp_path / "armorm_like")
    out = tmp_path / "out"
    args = (f"--model={ws['policy']} --prompts={prompts} --reward_model.name={rm} --reward_model.dtype=float32 "
            f"--max_new_tokens=12 --batch_size=8 --output_dir={out}")
    result = run_make(REPO, "--no-print-directory", "onpolicy", "MODEL=llama3-instruct-v0.2", f"ARGS={args}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [13, 21, 42, 79, 100] and report["reward_model"] == str(rm)
    assert report["splits"]["train"]["prompts"] == 6 and report["splits"]["test"]["prompts"] == 3
    assert "| train | 6 |" in result.stdout and len(read_jsonl(out / "samples" / "train.jsonl")) == 30
