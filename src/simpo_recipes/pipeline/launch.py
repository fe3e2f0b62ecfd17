"""How `scripts/train.py` launches a recipe: how many processes, on GPUs or CPU, with which
`accelerate launch` arguments; and the dry-run plan of each stage (`make plan`)."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from simpo_recipes.config.parsing import read_yaml
from simpo_recipes.errors import ConfigError

# resolved values `make plan` prints for every stage, where the stage's configs have them
HYPERPARAMETERS = (
    "dtype", "attn_implementation", "max_length", "max_prompt_length", "learning_rate", "lr_scheduler_type",
    "warmup_steps", "num_train_epochs", "max_steps", "optim", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "bf16", "activation_checkpointing", "seed", "use_peft", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "load_in_4bit",
)


def check_fsdp(fsdp: bool, use_cpu: bool) -> None:
    """accelerate runs an FSDP config on CPU as plain DDP without a word: refuse instead."""
    if fsdp and use_cpu:
        raise ConfigError("FSDP needs GPUs; on CPU accelerate would silently run plain DDP instead. Use "
                          "accelerate_configs/deepspeed_zero3.yaml (shards on CPU too) or multi_gpu.yaml")


@dataclass
class Topology:
    accelerate_config: str = field(metadata={"help": "accelerate_configs/<topology>.yaml."})
    num_processes: int = field(metadata={"help": "Processes over all machines: the world size."})
    use_cpu: bool = field(metadata={"help": "No GPU: the processes run on CPU (gloo); stages get --use_cpu=true."})
    distributed_type: str = field(default="NO", metadata={"help": "NO, MULTI_GPU, DEEPSPEED or FSDP."})
    num_machines: int = field(default=1, metadata={"help": "Nodes (Slurm: SLURM_NNODES)."})
    machine_rank: int = field(default=0, metadata={"help": "This node's rank (Slurm: SLURM_NODEID)."})
    main_process_ip: str | None = field(default=None, metadata={"help": "Rank-0 node's address (multi-node)."})
    main_process_port: int = field(default=29500, metadata={"help": "Rendezvous port (multi-node)."})


def detect_topology(accelerate_config: str, num_processes: int | None, gpus: int, **multi_node) -> Topology:
    """World size: `num_processes` if given, else every GPU found (`gpus` per machine)."""
    if not Path(accelerate_config).is_file():
        raise ConfigError(f"accelerate config {accelerate_config} does not exist (see accelerate_configs/)")
    config = read_yaml(accelerate_config)
    distributed = str(config.get("distributed_type", "NO"))
    machines = multi_node.get("num_machines", 1)
    if config.get("use_cpu"):
        world, use_cpu = num_processes or config.get("num_processes", 1), True
    else:
        world, use_cpu = num_processes or gpus * machines, gpus == 0
        if world == 0:
            raise ConfigError(f"no GPU found for {accelerate_config}: run on a GPU node, or set NUM_GPUS=N "
                              "to run N CPU processes, or ACCELERATE_CONFIG=accelerate_configs/cpu.yaml")
    check_fsdp(distributed == "FSDP", use_cpu)
    if distributed == "NO" and world > 1:
        raise ConfigError(f"{accelerate_config} runs a single process; for {world} use multi_gpu.yaml or deepspeed")
    if machines > 1 and not multi_node.get("main_process_ip"):
        raise ConfigError("several machines need --main_process_ip (the rank-0 node's address)")
    return Topology(accelerate_config, world, use_cpu, distributed, **multi_node)


def recipe_topology(recipe, accelerate_config: str | None, num_processes: int | None, plan: bool,
                    **multi_node) -> tuple[Topology, str | None]:
    """The topology a recipe runs on here (every GPU found), or, for a plan on a machine without GPUs,
    the one it would run on (plan_gpus); and the note saying which."""
    import torch

    config = accelerate_config or recipe.accelerate_config
    gpus, note = torch.cuda.device_count(), None
    if plan and not read_yaml(config).get("use_cpu"):
        gpus, note = plan_gpus(gpus, num_processes, multi_node.get("num_machines", 1), recipe.hardware)
    return detect_topology(config, num_processes, gpus, **multi_node), note


def prepare_stage(stage, script: str, stage_args: list[str], topology: Topology, plan: bool = False,
                  origins: dict[str, str] | None = None) -> tuple:
    """(configs, accelerate launch command) of one stage, validated before any stage starts: its
    config (errors name where a value came from: `origins`), what it reports to, and (when it will
    run here) quantization on this hardware."""
    import torch

    from simpo_recipes.config.parsing import parse_config
    from simpo_recipes.training.lora import check_quantization
    from simpo_recipes.training.tracking import check_report_to

    stage_args = stage_args + (["--use_cpu=true"] if topology.use_cpu else [])
    # a GPU-less machine can only validate bf16 as CPU
    check_args = stage_args + ([] if torch.cuda.is_available() or topology.use_cpu else ["--use_cpu=true"])
    configs = parse_config(stage.stage, check_args, origins)
    check_report_to(configs[2].report_to)
    if not plan:
        check_quantization(configs[3], topology.use_cpu)
    return configs, launch_command(topology, mixed_precision(configs[2])) + [script, *stage_args]


def launch_command(topology: Topology, mixed_precision: str) -> list[str]:
    """`accelerate launch` with the topology; the precision follows the stage's bf16/fp16, since
    DeepSpeed refuses a config whose precision differs from the training arguments'."""
    # --quiet: a failing stage prints its own message, not the launcher's traceback of the subprocess call
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", topology.accelerate_config,
               "--num_processes", str(topology.num_processes), "--mixed_precision", mixed_precision]
    if topology.num_machines > 1:
        command += ["--num_machines", str(topology.num_machines), "--machine_rank", str(topology.machine_rank),
                    "--main_process_ip", topology.main_process_ip, "--main_process_port",
                    str(topology.main_process_port)]
    return command


def mixed_precision(args) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "no"


def plan_gpus(found: int, num_processes: int | None, num_machines: int, hardware) -> tuple[int, str | None]:
    """GPUs per machine to plan for, and why, when this machine has none: the requested world size
    (NUM_GPUS=), else the recipe's `hardware`, else one GPU. A plan describes the GPU run; only a CPU
    accelerate config plans a CPU run."""
    if found:
        return found, None
    if num_processes:
        gpus = math.ceil(num_processes / num_machines)
        return gpus, f"no GPU here: planning for {num_processes} GPU(s) (NUM_GPUS={num_processes})"
    if hardware is not None:
        return hardware.gpus, (f"no GPU here: planning for the recipe's hardware, {hardware.gpus} GPU(s) per machine "
                               "(NUM_GPUS= changes it)")
    return 1, "no GPU here and the recipe has no `hardware:` block: planning for 1 GPU (NUM_GPUS=N plans for N)"


def _local_mixture(data_args, columns: tuple[str, ...], seed: int) -> dict | None:
    """The splits after the mixer's fractions, where every source is a local folder (None: hub data)."""
    if not all(Path(source).expanduser().is_dir() for source in data_args.dataset_mixer):
        return None
    from simpo_recipes.data.loading import load_mixture

    return load_mixture(data_args.dataset_mixer, data_args.dataset_splits, columns, seed=seed)


def _shown(name: str, value) -> str:
    if name == "warmup_steps" and 0 < value < 1:  # transformers 5 reads warmup_steps < 1 as a ratio
        return f"warmup_steps {value:g} (ratio: {value:.0%} of the steps)"
    return f"{name} {value}"


# Rendered when the data is on the hub: the template still meets a conversation before any GPU time.
PROBE_ROWS = {"preference": {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "5"},
              "sft": {"messages": [{"role": "user", "content": "What is 2 + 2?"},
                                   {"role": "assistant", "content": "2 + 2 = 4."}]}}
EXAMPLE_ROWS = 16  # rows of each split tokenized for the example (the first that fits is shown)


def chained_tokenizer(model_args, data_args, previous: tuple | None) -> tuple:
    """(model_args, data_args) that load a stage's tokenizer: its model's own, or, while the previous
    stage has not saved that model yet, the previous stage's tokenizer with this stage's chat_template
    on top (what the previous stage will save)."""
    if previous is None or model_args.tokenizer_name_or_path or Path(model_args.model_name_or_path).is_dir():
        return model_args, data_args
    previous_model, previous_data = previous
    return (replace(model_args, model_name_or_path=previous_model.model_name_or_path,
                    tokenizer_name_or_path=previous_model.tokenizer_name_or_path),
            replace(data_args, chat_template=data_args.chat_template or previous_data.chat_template))


def stage_examples(configs: tuple, mixture: dict | None, config_path: str, tokenizer_args: tuple) -> list[str]:
    """One rendered example per split with the stage's tokenizer and chat template (`tokenizer_args`:
    see chained_tokenizer), so a template that fails (or a missing one) stops `make plan`, naming the
    stage's training config."""
    from datasets import Dataset, disable_progress_bars

    from simpo_recipes.data.chat import ChatTemplateError
    from simpo_recipes.data.examples import split_examples
    from simpo_recipes.data.loading import DataError
    from simpo_recipes.data.preprocess import prepare_conversations, prepare_preferences
    from simpo_recipes.training.runtime import load_tokenizer

    args = configs[2]
    model_args, data_args = tokenizer_args
    try:
        tokenizer = load_tokenizer(model_args, data_args)
    except ChatTemplateError as e:
        raise ConfigError(f"{config_path}: {e}") from None
    except ConfigError:  # a hub model that is not in the cache: the stage renders it when it starts
        name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
        return [f"  example:         not rendered here: the tokenizer of {name} is neither a local folder nor in "
                "the Hugging Face cache (the stage prints one when it starts)"]
    preference = len(configs) > 4  # the preference stage's configs end with its objective
    if mixture is None:
        splits, note = {"probe": Dataset.from_list([PROBE_ROWS["preference" if preference else "sft"]])}, \
            " (a made-up row: the data is on the hub)"
    else:
        splits, note = {split: ds.select(range(min(EXAMPLE_ROWS, len(ds)))) for split, ds in mixture.items()}, ""
    disable_progress_bars()
    lines = []
    for split, rows in splits.items():
        name = f"the first {len(rows)} rows of the {split} split"
        try:
            tokenized = (prepare_preferences(rows, tokenizer, args.max_length, args.max_prompt_length, 1.0, name)
                         if preference else prepare_conversations(rows, tokenizer, args.max_length, 1.0, name))
        except ChatTemplateError as e:
            raise ConfigError(f"{config_path}: {e}") from None
        except DataError:
            lines.append(f"  example:         none of {name} is kept (see the drop counts above)")
            continue
        lines += ["  " + line for line in split_examples(tokenizer, {split: tokenized}, note)]
    return lines


def describe_stage(configs: tuple, topology: Topology, command: list[str], config_path: str,
                   tokenizer_args: tuple | None = None) -> list[str]:
    """The plan of one stage: model, data, hyperparameters, margin, batch arithmetic, steps, and one
    rendered example per split (template errors name `config_path`, the stage's training config;
    `tokenizer_args`: see chained_tokenizer, default the stage's own)."""
    from simpo_recipes.config.arguments import batch_arithmetic, planned_batch
    from simpo_recipes.data.loading import PREFERENCE_COLUMNS, SFT_COLUMNS

    model_args, data_args, args = configs[:3]
    values = {name: getattr(c, name) for c in configs for name in HYPERPARAMETERS if hasattr(c, name)}
    values = {k: v.value if isinstance(v, Enum) else v for k, v in values.items()}
    if not values.get("use_peft"):
        values = {k: v for k, v in values.items() if not k.startswith(("lora_", "load_in"))}
    mixer = ", ".join(f"{source} ({fraction:g})" for source, fraction in data_args.dataset_mixer.items())
    lines = [f"  model:           {model_args.model_name_or_path}",
             f"  data:            {mixer}; splits {', '.join(data_args.dataset_splits)}",
             "  hyperparameters: " + ", ".join(_shown(k, v) for k, v in values.items() if v is not None)]
    if len(configs) > 4:  # the preference stage: its objective and the objective's own hyperparameters
        objective = configs[4]
        settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in objective.hyperparameters().items() if v is not None)
        lines.append(f"  objective:       {objective.name} ({objective.formula}); {settings or 'no hyperparameters'}"
                     + ("; reference log-probs " + args.reference_logps if objective.needs_reference else ""))
    lines.append(f"  batch:           {batch_arithmetic(args, topology.num_processes)}")
    mixture = _local_mixture(data_args, PREFERENCE_COLUMNS if len(configs) > 4 else SFT_COLUMNS, args.seed)
    if mixture is None:
        lines.append("  steps per epoch: counted at run time (hub data)")
    else:
        rows, total = len(mixture["train"]), planned_batch(args, topology.num_processes)[2]
        lines.append(f"  steps per epoch: {math.ceil(rows / total)} ({rows} local train rows before length checks)")
    lines.append(f"  output:          {args.output_dir}")
    lines.append(f"  launch:          accelerate launch {' '.join(command[3:])}")
    return lines + stage_examples(configs, mixture, config_path, tokenizer_args or configs[:2])
