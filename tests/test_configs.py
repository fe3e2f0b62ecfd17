"""Every YAML in the repository parses and validates — every method of every recipe too; bad configs
fail before any model loads."""
from pathlib import Path

import pytest
import torch

from simpo_recipes.config.arguments import stage_types
from simpo_recipes.config.parsing import build, parse_config
from simpo_recipes.errors import ConfigError
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.pipeline.recipes import load_recipe, stage_commands

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "training_configs").glob("*.yaml")) + sorted((ROOT / "recipes").glob("*.yaml"))
# bf16 configs validate on a GPU-less machine only as CPU runs (transformers' own check)
CPU = [] if torch.cuda.is_available() else ["--use_cpu=true"]


def stage_of(path: Path) -> str:
    """training_configs/<model>-sft.yaml is an SFT stage; <model>-simpo.yaml a preference stage."""
    return "sft" if path.stem.endswith("-sft") else "preference"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_yaml_parses_and_validates(path):
    if path.parent.name == "training_configs":
        model_args, data_args, args, *_ = parse_config(stage_of(path), [str(path), *CPU])
        assert model_args.model_name_or_path and data_args.dataset_mixer and args.output_dir
        return
    recipe = load_recipe(path)
    for method in [None, *recipe.methods]:
        commands = stage_commands(recipe, method=method)
        assert [stage for stage, _ in commands] == recipe.stages
        previous_output = None
        for stage, (script, config, *overrides) in commands:
            assert Path(script).name == f"run_{stage.stage}.py" and stage_of(Path(config)) == stage.stage
            configs = parse_config(stage.stage, [config, *overrides, *CPU])
            if previous_output:  # each stage starts from the previous one's output
                assert f"--model_name_or_path={previous_output}" in overrides
            previous_output = configs[2].output_dir
        if method is not None:  # the method's objective, into a folder named after it
            assert configs[4].name == recipe.methods[method].objective
            assert Path(previous_output).name == method


def simpo(**overrides):
    config = {"model_name_or_path": "m", "dataset_mixer": {"d": 1.0}, "output_dir": "/tmp/x"} | overrides
    return build(config, stage_types("preference"), "test.yaml")


def test_unknown_key_names_file_and_closest_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nbetta: 2.0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'betta'; did you mean 'beta'\?"):
        parse_config("preference", [str(path)])


@pytest.mark.parametrize("overrides, message", [
    ({"beta": 0}, "beta = 0"),
    ({"beta": -1.0}, "beta = -1.0"),
    ({"gamma": -0.1}, "margin γ = -0.1"),
    ({"gamma": 0.5, "gamma_beta_ratio": 0.5}, "both gamma and gamma_beta_ratio"),
    ({"max_length": 512, "max_prompt_length": 512}, "max_prompt_length = 512"),
    ({"dataset_mixer": {"d": 1.5}}, r"dataset_mixer\['d'\] = 1.5"),
    ({"dataset_mixer": {"d": 0}}, r"dataset_mixer\['d'\] = 0"),
    ({"label_smoothing": 0.5}, "label_smoothing"),
    ({"loss_type": "ipo"}, "loss_type"),
    ({"learning_rate": "fast"}, "learning_rate = 'fast' is not a valid float"),
    ({"total_batch_size": 100, "per_device_train_batch_size": 8}, "total_batch_size = 100"),
])
def test_bad_values_fail_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        simpo(**overrides)


def test_margin_either_way_and_logged_gamma():
    assert simpo(beta=2.5, gamma_beta_ratio=0.55)[4].effective_gamma == pytest.approx(1.375)
    assert simpo(beta=2.5, gamma=1.0)[4].effective_gamma == 1.0


def test_total_batch_size_sets_accumulation():
    args = simpo(total_batch_size=128, per_device_train_batch_size=2)[2]
    assert args.world_size == 1 and args.gradient_accumulation_steps == 64
    with pytest.raises(ConfigError, match="contradicts"):
        simpo(total_batch_size=128, per_device_train_batch_size=2, gradient_accumulation_steps=16)


def test_reference_repo_spellings_and_yaml_quirks(tmp_path, caplog):
    path = tmp_path / "ref.yaml"
    # PyYAML reads 1e-6 (no dot) as a string; warmup_ratio and evaluation_strategy are old spellings
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nlearning_rate: 1e-6\n"
                    "warmup_ratio: 0.1\nevaluation_strategy: steps\ntorch_dtype: bfloat16\n")
    model_args, _, args, _, objective = parse_config("preference", [str(path), "--beta=10", "--output_dir", "/tmp/o"])
    assert args.learning_rate == 1e-6 and args.warmup_steps == 0.1 and args.eval_strategy == "steps"
    assert model_args.dtype == "bfloat16" and objective.beta == 10.0 and args.output_dir == "/tmp/o"
    assert "'warmup_ratio' is deprecated" in caplog.text


def test_command_line_overrides_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nbeta: 2.0\n")
    args = parse_config("preference", [str(path), "--beta=2.5", "--dataset_mixer={e: 0.5}"])
    assert args[4].beta == 2.5 and args[1].dataset_mixer == {"e": 0.5}


def test_yaml_no_is_a_strategy_not_false(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nsave_strategy: no\n")
    assert parse_config("preference", [str(path), "--eval_strategy=no"])[2].save_strategy == "no"


def test_every_objective_has_a_method_in_the_tiny_recipe():
    assert {m.objective for m in load_recipe(ROOT / "recipes/tiny.yaml").methods.values()} == set(OBJECTIVES)
