"""`script.py config.yaml [--key=value ...]` -> typed dataclasses.

YAML is read with a safe loader that also refuses a key given twice; command-line values override
it and are read as YAML scalars. Every value is checked against its field's type. Unknown keys fail
with the file and the closest valid key; old spellings used by the reference SimPO repository are
mapped with a one-line notice. Each message names where the value came from: the file, or the
command-line override.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import logging
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

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
    "gradient_checkpointing": ("activation_checkpointing", lambda v: v),  # transformers 5's name
    "gradient_checkpointing_kwargs": ("activation_checkpointing_kwargs", lambda v: v),
}
# secrets: never taken from a config or the command line, where they would end up in files
# (transformers pickles its arguments into training_args.bin), process lists and logs
SECRET_KEYS = {"hub_token": "HF_TOKEN"}
# old keys that no longer do anything -> why they can be dropped
IGNORED_KEYS = {
    "overwrite_output_dir": "a rerun resumes the run in output_dir, or skips it if finished; --fresh_start starts over",
}


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"{self.name}: key {key!r} is given twice (lines {lines[key]} and {line}); "
                                  "keep one")
            lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            content = yaml.load(f, Loader=_StrictLoader)
    except (FileNotFoundError, IsADirectoryError):
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


class _Mismatch(ValueError):
    """A value does not fit a type."""


_NOUNS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def _describe(hint: Any) -> str:
    """What a value of type `hint` looks like, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in args if h is not type(None))
    if origin is list:
        return f"a list ({_describe(args[0])} each)" if args else "a list"
    return _NOUNS.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _fit(value: Any, hint: Any, convert: bool) -> Any:
    """`value` as type `hint`; with `convert`, also from the forms YAML and the command line give
    (the string "1e-6", an integral float, `no` for a strategy). Raises _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for exact in (True, False) if convert else (True,):
            for member in (a for a in args if a is not type(None)):
                try:
                    return _fit(value, member, convert=not exact)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin is list or hint is list:
        if isinstance(value, list):
            return [_fit(v, args[0], convert) for v in value] if args else value
        raise _Mismatch
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch
    if hint is bool:
        if isinstance(value, bool):
            return value
        if convert and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if convert and isinstance(value, (str, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                raise _Mismatch from None
            if number.is_integer():
                return int(number)
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if convert and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        if convert and isinstance(value, bool):  # YAML reads `save_strategy: no` as False
            return "yes" if value else "no"
        if convert and isinstance(value, (int, float)):
            return str(value)
        raise _Mismatch
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint) or value in {m.value for m in hint}:
            return value
        raise _Mismatch
    return value  # other classes (ParallelismConfig, ...) are checked by their owner


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    try:
        return _fit(value, hint, convert=True)
    except _Mismatch:
        raise ConfigError(f"{where}: {key} = {value!r} must be {_describe(hint)}") from None


def _blame(message: str, keys: dict[str, str], source: str) -> str:
    """Where a dataclass's own check failed: the origins of the keys its message names, else `source`."""
    named = sorted({where for key, where in keys.items() if re.search(rf"\b{re.escape(key)}\b", message)})
    return ", ".join(named) or source


def build(config: dict[str, Any], types: tuple[type, ...], source: str, origins: dict[str, str] | None = None) -> tuple:
    """Split `config` over the dataclasses `types`, check every key and value, instantiate them.
    `origins` names where a key came from when not from `source` (e.g. "command line --beta")."""
    origins = origins or {}
    fields = {f.name: (i, f) for i, t in reversed(list(enumerate(types))) for f in dataclasses.fields(t) if f.init}
    hints = [typing.get_type_hints(t) for t in types]
    kwargs: list[dict[str, Any]] = [{} for _ in types]
    keys: dict[str, str] = {}
    for key, value in config.items():
        where = origins.get(key, source)
        if key in SECRET_KEYS and value is not None:
            raise ConfigError(f"{where}: {key} is a secret: set it in the environment as {SECRET_KEYS[key]} instead "
                              "(given here it would be saved in training_args.bin and shown in logs)")
        if key in IGNORED_KEYS:
            logger.warning("%s: %r is deprecated and ignored: %s", where, key, IGNORED_KEYS[key])
            continue
        if key in DEPRECATED_KEYS:
            new_key, convert = DEPRECATED_KEYS[key]
            logger.warning("%s: %r is deprecated, read as %r", where, key, new_key)
            key, value = new_key, convert(value)
        if key not in fields:
            raise ConfigError(f"{where}: {_unknown_key(key, list(fields), types)}")
        index, _f = fields[key]
        kwargs[index][key] = _coerce(key, value, hints[index][key], where)
        keys[key] = where
    built = []
    for t, kw in zip(types, kwargs):
        missing = [f.name for f in dataclasses.fields(t) if f.init and f.name not in kw
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{source}: required key(s) missing: {', '.join(missing)}")
        try:
            built.append(t(**kw))
        except (ValueError, TypeError) as e:  # our checks (ConfigError) and transformers' own validation
            raise ConfigError(f"{_blame(str(e), keys, source)}: {e}") from None
    return tuple(built)


def _unknown_key(key: str, known: list[str], types: tuple[type, ...]) -> str:
    objective = next((t for t in types if issubclass(t, Objective)), None)
    owners = [name for name, cls in OBJECTIVES.items() if key in cls.keys()]
    if objective is not None and owners:
        return (f"{key!r} is a hyperparameter of {', '.join(owners)}, not of objective {objective.name!r} "
                f"(its keys: {', '.join(objective.keys()) or 'none'}); set objective: {owners[0]} or remove it")
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")


def stage_config(stage: str, file_config: dict[str, Any], overrides: dict[str, Any], source: str,
                 origins: dict[str, str] | None = None) -> tuple:
    """A stage's dataclasses from its config file and command-line overrides (which win); `origins`
    names where each override came from (default: "command line --key").

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
    origins = {key: f"command line --{key}" for key in overrides} | (origins or {})
    return build(config, stage_types(stage, objective if isinstance(objective, str) else ""), source, origins)


def parse_config(stage: str, argv: list[str] | None = None, origins: dict[str, str] | None = None) -> tuple:
    """Entry point of the stage scripts: argv = [config.yaml, --key=value, ...]; `origins` as in
    `stage_config`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: script.py CONFIG.yaml [--key=value ...]")
    return stage_config(stage, read_yaml(argv[0]), parse_overrides(argv[1:]), source=argv[0], origins=origins)


def resolved(objects: tuple) -> dict[str, Any]:
    """Every key of the configs with its resolved value, one flat mapping."""
    merged: dict[str, Any] = {}
    for obj in objects:
        # TrainingArguments.to_dict() already masks secrets such as hub_token
        d = obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)
        merged.update({k: v for k, v in d.items() if not k.startswith("_")})
    return merged


def to_yaml(objects: tuple) -> str:
    """The resolved configuration, as saved beside each run's outputs."""
    return yaml.safe_dump(resolved(objects), sort_keys=True)
