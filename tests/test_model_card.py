"""Each stage's README.md: Hub metadata and what defines the run, then evaluation results."""
import json

from huggingface_hub import ModelCard

from simpo_recipes.config.parsing import parse_config, to_yaml
from simpo_recipes.evaluation import results
from simpo_recipes.training.model_card import add_evaluation, objective, write_model_card

HUB_MODEL, HUB_DATA = "meta-llama/Meta-Llama-3-8B-Instruct", "princeton-nlp/llama3-ultrafeedback"
METRICS = [{"step": 10, "loss": 0.9, "rewards/accuracies": 0.75, "logps/chosen": -0.3},
           {"step": 20, "loss": 0.7, "rewards/accuracies": 0.8, "logps/chosen": -0.32},
           {"step": 20, "eval_loss": 0.8, "eval_rewards/accuracies": 0.7, "eval_rewards/margins": 1.5},
           {"step": 20, "train_loss": 0.8, "train_runtime": 3.0}]


def finished_stage(folder, model, data, *extra):
    folder.mkdir(parents=True)
    config = "training_configs/llama3-instruct-simpo.yaml"
    configs = parse_config("preference", [config, f"--model_name_or_path={model}", f"--dataset_mixer={json.dumps(data)}",
                                          "--use_cpu=true", *extra])
    (folder / "run_config.yaml").write_text(to_yaml(configs))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in METRICS))
    return folder


def test_card_names_model_data_objective_batch_and_final_metrics(tmp_path):
    local = tmp_path / "extra_pairs"
    local.mkdir()
    stage = finished_stage(tmp_path / "simpo", HUB_MODEL, {HUB_DATA: 1.0, str(local): 0.5})
    card = ModelCard.load(write_model_card(stage, global_batch=128))
    assert card.data.base_model == HUB_MODEL and card.data.datasets == [HUB_DATA]  # local data: body only
    assert {"simpo", "simpo-recipes"} <= set(card.data.tags) and card.data.library_name == "transformers"
    text = card.text
    assert "Model Card for" not in text  # not TRL's placeholder
    assert "| objective | simpo: beta 2.5, gamma_beta_ratio 0.55, loss_type sigmoid" in text
    assert "effective_gamma 1.375" in text and "| global batch | 128 pairs |" in text
    assert f"`{local}` (0.5)" in text and "warmup 10% of the steps" in text and "| precision | bf16 |" in text
    assert "| loss | 0.7 | 0.8 |" in text and "| rewards/accuracies | 0.8 | 0.7 |" in text
    assert "| rewards/margins | — | 1.5 |" in text and "Not evaluated yet" in text


def test_a_chained_stage_names_the_hub_model_it_descends_from(tmp_path):
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "README.md").write_text(f"---\nbase_model: {HUB_MODEL}\ntags: [sft, simpo-recipes]\n---\n# sft\n")
    stage = finished_stage(tmp_path / "simpo", str(sft), {HUB_DATA: 1.0})
    card = ModelCard.load(write_model_card(stage, global_batch=64))
    assert card.data.base_model == HUB_MODEL and f"`{sft}` (from {HUB_MODEL})" in card.text


def test_make_eval_results_enter_the_card_once(tmp_path):
    stage = finished_stage(tmp_path / "simpo", HUB_MODEL, {HUB_DATA: 1.0})
    write_model_card(stage, global_batch=128)
    path = tmp_path / "results.json"
    results.update(path, "alpaca_eval", {"win_rate": 41.5, "length_controlled_winrate": 44.0, "judge": "gpt-4"},
                   recipe="llama3-instruct")
    saved = results.update(path, "mt_bench", {"score": 7.9, "judge": "gpt-4"})
    for _ in range(2):  # a second make eval replaces the section, never duplicates it
        card = ModelCard.load(add_evaluation(stage, saved))
    values = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values == {("AlpacaEval 2", "length_controlled_winrate"): 44.0, ("AlpacaEval 2", "win_rate"): 41.5,
                      ("MT-Bench", "score"): 7.9}
    assert card.text.count("## Evaluation") == 1 and "Not evaluated yet" not in card.text
    assert "| AlpacaEval 2 | AlpacaEval 2 LC | 44.0% | gpt-4 |" in card.text and "## Files" in card.text
    assert "| MT-Bench | MT-Bench (GPT-4) | 7.9 | gpt-4 |" in card.text  # the column names its judge
    other = tmp_path / "not_ours"
    other.mkdir()
    (other / "README.md").write_text("---\ntags: [x]\n---\n# someone else's card\n")
    assert add_evaluation(other, saved) is None and "someone else's" in (other / "README.md").read_text()


def test_objective_comes_from_the_resolved_config():
    assert objective({"learning_rate": 2e-5, "beta": 0.1}) == ("sft", {})  # no objective: the SFT stage
    name, hyperparameters = objective({"objective": "simpo", "beta": 2.0, "gamma": 1.0, "loss_type": "hinge",
                                       "learning_rate": 1e-6})
    assert name == "simpo" and hyperparameters["loss_type"] == "hinge" and hyperparameters["effective_gamma"] == 1.0
    assert "learning_rate" not in hyperparameters and "gamma_beta_ratio" not in hyperparameters  # unset: left out
    assert objective({"objective": "dpo", "beta": 0.01, "gamma_beta_ratio": 0.5}) == (
        "dpo", {"beta": 0.01, "label_smoothing": 0.0})
