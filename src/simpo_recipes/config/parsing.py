"""`script.py config.yaml [--key=value ...]` -> typed dataclasses.

YAML is read with safe_load; command-line values override it and are read as YAML scalars.
Unknown keys fail with the file and the closest valid key; old spellings used by the reference
SimPO repository are mapped with a one-line notice.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from simpo_recipes.config.arguments import stage_types
from simpo_recipes.errors import ConfigError
from simpo_recipes.objectives import OBJECTIVES, Objective

logger = logging.getLogger(__name__)

# old key -> (new key, value conversion)
DEPRECATED_KEYS = {
    "evaluation_strategy": ("eval_strategy", lambda v: v),
    "torch_dtype": ("dtype", lambda v: v),
    "warmup_ratio": ("warmup_steps", float),  # transformers 5: warmup_steps < 1 is a ratio
    "max_seq_length": ("max_length", lambda v: v),  # TRL's old SFT spelling
    "use_flash_attention_2": ("attn_implementation", lambda v: "flash_attention_2" if v else None),
}
# old keys that no longer do anything -> why they can be dropped
IGNORED_KEYS = {
    "overwrite_output_dir": "a rerun resumes from the last checkpoint in output_dir; delete it to start over",
}


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must be a YAML mapping of keys to values, got {type(content).__name__}")
    return content


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """`--key=value` or `--key value` pairs; values are parsed as YAML (numbers, bools, lists, dicts)."""
    overrides, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --key=value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, value = arg[2:], argv[i + 1]
            i += 1
        else:
            key, value = arg[2:], "true"
        overrides[key] = yaml.safe_load(value) if value != "" else None
        i += 1
    return overrides


def _coerce(key: str, value: Any, f: dataclasses.Field, source: str) -> Any:
    """YAML reads `1e-6` as a string and `no` as False, and CLI values lack types: convert by the
    field's default."""
    default = f.default
    try:
        if isinstance(default, bool) or value is None:
            return value
        if isinstance(default, str) and isinstance(value, bool):  # save_strategy: no
            return "yes" if value else "no"
        if isinstance(default, float) and isinstance(value, (int, str)):
            return float(value)
        if isinstance(default, int) and isinstance(value, str):
            return int(value)
        if isinstance(default, str) and isinstance(value, (int, float)):
            return str(value)
    except ValueError:
        raise ConfigError(f"{source}: {key} = {value!r} is not a valid {type(default).__name__}") from None
    return value


def build(config: dict[str, Any], types: tuple[type, ...], source: str) -> tuple:
    """Split `config` over the dataclasses `types`, check every key, instantiate them."""
    fields = {f.name: (i, f) for i, t in reversed(list(enumerate(types))) for f in dataclasses.fields(t) if f.init}
    kwargs: list[dict[str, Any]] = [{} for _ in types]
    for key, value in config.items():
        if key in IGNORED_KEYS:
            logger.warning("%s: %r is deprecated and ignored: %s", source, key, IGNORED_KEYS[key])
            continue
        if key in DEPRECATED_KEYS:
            new_key, convert = DEPRECATED_KEYS[key]
            logger.warning("%s: %r is deprecated, read as %r", source, key, new_key)
            key, value = new_key, convert(value)
        if key not in fields:
            raise ConfigError(f"{source}: {_unknown_key(key, list(fields), types)}")
        index, f = fields[key]
        kwargs[index][key] = _coerce(key, value, f, source)
    built = []
    for t, kw in zip(types, kwargs):
        missing = [f.name for f in dataclasses.fields(t) if f.init and f.name not in kw
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{source}: required key(s) missing: {', '.join(missing)}")
        try:
            built.append(t(**kw))
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except (ValueError, TypeError) as e:  # raised by transformers' own validation
            raise ConfigError(f"{source}: {e}") from None
    return tuple(built)


def _unknown_key(key: str, known: list[str], types: tuple[type, ...]) -> str:
    objective = next((t for t in types if issubclass(t, Objective)), None)
    owners = [name for name, cls in OBJECTIVES.items() if key in cls.keys()]
    if objective is not None and owners:
        return (f"{key!r} is a hyperparameter of {', '.join(owners)}, not of objective {objective.name!r} "
                f"(its keys: {', '.join(objective.keys()) or 'none'}); set objective: {owners[0]} or remove it")
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")


def stage_config(stage: str, file_config: dict[str, Any], overrides: dict[str, Any], source: str) -> tuple:
    """A stage's dataclasses from its config file and command-line overrides (which win).

    An `objective` given on the command line that differs from the file's drops the file's
    hyperparameters of the file's objective — they belong to another loss (a SimPO β of 2.5 is no
    DPO β) — with a notice; the new objective's come with it (as `make train OBJECTIVE=` does)."""
    config = file_config | overrides
    objective = config.get("objective", "simpo")
    if stage == "preference" and objective != file_config.get("objective", "simpo"):
        replaced = OBJECTIVES.get(file_config.get("objective", "simpo"))
        dropped = [k for k in (replaced.keys() if replaced else []) if k in file_config and k not in overrides]
        if dropped:
            logger.warning("%s: objective %s given on the command line; the file's %s hyperparameters %s are "
                           "not used", source, objective, replaced.name, ", ".join(dropped))
        config = {k: v for k, v in config.items() if k not in dropped}
    return build(config, stage_types(stage, objective if isinstance(objective, str) else ""), source)


def parse_config(stage: str, argv: list[str] | None = None) -> tuple:
    """Entry point of the stage scripts: argv = [config.yaml, --key=value, ...]."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: script.py CONFIG.yaml [--key=value ...]")
    return stage_config(stage, read_yaml(argv[0]), parse_overrides(argv[1:]), source=argv[0])


def to_yaml(objects: tuple) -> str:
    """The resolved configuration, as saved beside each run's outputs."""
    merged: dict[str, Any] = {}
    for obj in objects:
        # TrainingArguments.to_dict() already masks secrets such as hub_token
        d = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        merged.update({k: v for k, v in d.items() if not k.startswith("_")})
    return yaml.safe_dump(merged, sort_keys=True)
