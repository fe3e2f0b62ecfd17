"""How `scripts/train.py` launches a recipe: how many processes, on GPUs or CPU, with which
`accelerate launch` arguments; and the dry-run plan of each stage (`make plan`)."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
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


def launch_command(topology: Topology, mixed_precision: str) -> list[str]:
    """`accelerate launch` with the topology; the precision follows the stage's bf16/fp16, since
    DeepSpeed refuses a config whose precision differs from the training arguments'."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", topology.accelerate_config,
               "--num_processes", str(topology.num_processes), "--mixed_precision", mixed_precision]
    if topology.num_machines > 1:
        command += ["--num_machines", str(topology.num_machines), "--machine_rank", str(topology.machine_rank),
                    "--main_process_ip", topology.main_process_ip, "--main_process_port",
                    str(topology.main_process_port)]
    return command


def mixed_precision(args) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "no"


def _rows(data_args, columns: tuple[str, ...]) -> int | None:
    """Train rows after the mixer's fractions, where every source is a local folder."""
    if not all(Path(source).expanduser().is_dir() for source in data_args.dataset_mixer):
        return None
    from simpo_recipes.data.loading import load_mixture

    return len(load_mixture(data_args.dataset_mixer, data_args.dataset_splits, columns, seed=0)["train"])


def describe_stage(configs: tuple, topology: Topology, command: list[str]) -> list[str]:
    """The plan of one stage: model, data, hyperparameters, margin, batch arithmetic, steps."""
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
             "  hyperparameters: " + ", ".join(f"{k} {v}" for k, v in values.items() if v is not None)]
    if len(configs) > 4:  # the preference stage: its objective and the objective's own hyperparameters
        objective = configs[4]
        settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in objective.hyperparameters().items() if v is not None)
        lines.append(f"  objective:       {objective.name} ({objective.formula}); {settings or 'no hyperparameters'}"
                     + ("; reference log-probs " + args.reference_logps if objective.needs_reference else ""))
    lines.append(f"  batch:           {batch_arithmetic(args, topology.num_processes)}")
    rows = _rows(data_args, PREFERENCE_COLUMNS if len(configs) > 4 else SFT_COLUMNS)
    if rows is None:
        lines.append("  steps per epoch: counted at run time (hub data)")
    else:
        total = planned_batch(args, topology.num_processes)[2]
        lines.append(f"  steps per epoch: {math.ceil(rows / total)} ({rows} local train rows before length checks)")
    lines.append(f"  output:          {args.output_dir}")
    lines.append(f"  launch:          accelerate launch {' '.join(command[3:])}")
    return lines
