"""Every YAML in the repository parses and validates — every method of every recipe too; bad configs
fail before any model loads."""
import warnings
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
def test_every_yaml_parses_and_validates(path, caplog):
    if path.parent.name == "training_configs":
        with warnings.catch_warnings():  # our own configs use no deprecated spelling (transformers' or ours)
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            model_args, data_args, args, *_ = parse_config(stage_of(path), [str(path), *CPU])
        assert model_args.model_name_or_path and data_args.dataset_mixer and args.output_dir
        assert "deprecated" not in caplog.text
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


def test_a_bare_sft_config_checkpoints_without_a_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = build({"model_name_or_path": "m", "dataset_mixer": {"d": 1.0}, "output_dir": "o", "use_cpu": True},
                     stage_types("sft"), "sft.yaml")[2]
    assert args.activation_checkpointing and args.gradient_checkpointing  # TRL's default, transformers' name


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
    ({"learning_rate": "fast"}, "learning_rate = 'fast' must be a number"),
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


def test_a_key_given_twice_is_an_error_naming_file_key_and_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nbeta: 2.0\nlearning_rate: 1.0e-6\nbeta: 10\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'beta' is given twice \(lines 3 and 5\)"):
        parse_config("preference", [str(path)])


@pytest.mark.parametrize("line, message", [
    ('bf16: "maybe"', r"bad\.yaml: bf16 = 'maybe' must be true or false"),
    ("learning_rate: [1.0e-6, 2.0e-6]", r"bad\.yaml: learning_rate = \[1e-06, 2e-06\] must be a number"),
    ("max_steps: [10]", r"bad\.yaml: max_steps = \[10\] must be an integer"),
    ("dtype: fp32", r"bad\.yaml: dtype = 'fp32' must be one of auto, bfloat16, float16, float32"),
    ("dataset_splits: train", r"bad\.yaml: dataset_splits = 'train' must be a list \(a string each\)"),
    ("max_steps: 2.5", r"bad\.yaml: max_steps = 2.5 must be an integer"),
])
def test_wrong_types_name_the_file_and_key(tmp_path, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model_name_or_path: m\ndataset_mixer: {{d: 1.0}}\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        parse_config("preference", [str(path), *CPU])


def test_yaml_and_command_line_forms_still_convert(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nmax_steps: 1e3\nbf16: 'false'\nreport_to: none\n")
    args = parse_config("preference", [str(path), "--learning_rate=3e-7", "--save_steps=10"])[2]
    assert args.max_steps == 1000 and args.bf16 is False and args.learning_rate == 3e-7 and args.save_steps == 10


def test_a_bad_override_is_blamed_on_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\nbeta: 2.0\n")
    with pytest.raises(ConfigError, match=r"^command line --beta: beta = -1"):
        parse_config("preference", [str(path), "--beta=-1"])
    with pytest.raises(ConfigError, match=r"^command line --beta: beta = 'high' must be a number"):
        parse_config("preference", [str(path), "--beta=high"])


@pytest.mark.parametrize("where", ["yaml", "command line"])
def test_a_token_is_never_taken_from_a_config(tmp_path, where):
    """transformers pickles its arguments, hub_token included, into every checkpoint's training_args.bin."""
    path = tmp_path / "c.yaml"
    path.write_text("model_name_or_path: m\ndataset_mixer: {d: 1.0}\n" + ("hub_token: hf_secret123\n" * (where == "yaml")))
    extra = ["--hub_token=hf_secret123"] if where == "command line" else []
    with pytest.raises(ConfigError, match="hub_token is a secret: set it in the environment as HF_TOKEN") as error:
        parse_config("preference", [str(path), *extra])
    assert "hf_secret123" not in str(error.value)
