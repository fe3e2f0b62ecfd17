#!/usr/bin/env python
"""`make new-recipe MODEL=<name> BASE_MODEL=<hub name or folder>`: start a recipe for a new model with
only what does not depend on the model family: the paper's shared training setup (global batch 128,
one epoch, cosine schedule, warmup 10%, bf16, activation checkpointing, seed 42) and starting values
for the three SimPO knobs. Nothing of another family is carried over: the chat template is the
tokenizer's own, answers stop at the model's own end of turn, and there are no paper results and no
hardware notes. `make plan MODEL=<name>` then renders the template on the data; tune the knobs with
`make sweep MODEL=<name>`.

    python scripts/new_recipe.py NAME --model MODEL [--data DATASET] [--splits TRAIN TEST] [--sft_data DATASET]

--sft_data adds an SFT stage first (for a base model), e.g. HuggingFaceH4/ultrachat_200k."""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SHARED = """\
lr_scheduler_type: cosine
warmup_steps: 0.1
num_train_epochs: 1
optim: adamw_torch
per_device_train_batch_size: {per_device}
per_device_eval_batch_size: 4
total_batch_size: 128
bf16: true
activation_checkpointing: true
activation_checkpointing_kwargs:
  use_reentrant: false
seed: 42

eval_strategy: steps
eval_steps: 400
logging_steps: 5
save_strategy: steps
save_steps: 100
save_total_limit: 1
output_dir: outputs/{name}/{stage}
report_to: none
"""

SIMPO = """\
# Preference stage (SimPO) of recipes/{name}.yaml (written by scripts/new_recipe.py): model-independent
# settings.
model_name_or_path: {model}
attn_implementation: sdpa
# chat_template: the tokenizer's own. A model without one needs `chat_template: "..."` here;
# `make plan MODEL={name}` renders it on the data.
dataset_mixer:
  {data}: 1.0
dataset_splits: [{train}, {test}]
max_length: 2048
max_prompt_length: 1800

# Starting values (README, "Tuning"): learning rate matters most, then gamma/beta, then beta.
# `make sweep MODEL={name}` searches them.
beta: 2.5
gamma_beta_ratio: 0.5
learning_rate: 5.0e-7
loss_type: sigmoid
"""

SFT = """\
# SFT stage of recipes/{name}.yaml (written by scripts/new_recipe.py): model-independent settings.
model_name_or_path: {model}
attn_implementation: sdpa
# chat_template: the tokenizer's own; a base model without one needs `chat_template: "..."` here
# (the SimPO stage inherits the tokenizer this stage saves).
dataset_mixer:
  {data}: 1.0
dataset_splits: [train_sft, test_sft]
max_length: 2048
learning_rate: 2.0e-5
"""

RECIPE = """\
# {name}: started by scripts/new_recipe.py with model-independent settings only. Add `hardware:`
# (gpus, gpu_memory_gb, note) once a full run is measured, and stop strings if the model needs more
# than its own end of turn.
name: {name}
description: {description}
accelerate_config: accelerate_configs/deepspeed_zero3.yaml
stages:
{stages}
generation:
  temperature: 0.0
  top_p: 1.0
  max_new_tokens: 2048
"""


def quoted(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML scalar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="Recipe name: recipes/<name>.yaml, training_configs/<name>-<stage>.yaml.")
    parser.add_argument("--model", required=True, help="Hub name or local folder of the starting model.")
    parser.add_argument("--data", default="HuggingFaceH4/ultrafeedback_binarized", help="Preference data.")
    parser.add_argument("--splits", nargs=2, default=["train_prefs", "test_prefs"], metavar=("TRAIN", "TEST"))
    parser.add_argument("--sft_data", default=None, help="Add an SFT stage on this conversation data first.")
    parser.add_argument("--root", default=str(REPO), help="Repository holding recipes/ and training_configs/.")
    args = parser.parse_args()

    root = Path(args.root)
    files = {root / "recipes" / f"{args.name}.yaml": None}
    stages = []
    if args.sft_data:
        files[root / "training_configs" / f"{args.name}-sft.yaml"] = (SFT + "\n" + SHARED).format(
            name=args.name, model=quoted(args.model), data=quoted(args.sft_data), stage="sft", per_device=8)
        stages.append(("sft", "sft"))
    # after an SFT stage, SimPO starts from its output (scripts/train.py passes it on as well)
    simpo_model = f"outputs/{args.name}/sft" if args.sft_data else args.model
    files[root / "training_configs" / f"{args.name}-simpo.yaml"] = (SIMPO + "\n" + SHARED).format(
        name=args.name, model=quoted(simpo_model), data=quoted(args.data), train=args.splits[0],
        test=args.splits[1], stage="simpo", per_device=2)
    stages.append(("preference", "simpo"))
    files[root / "recipes" / f"{args.name}.yaml"] = RECIPE.format(
        name=args.name, description=quoted(f"{args.model}: SimPO on {args.data}"),
        stages="\n".join(f"  - stage: {stage}\n    config: training_configs/{args.name}-{suffix}.yaml"
                         for stage, suffix in stages))
    existing = [str(path) for path in files if path.exists()]
    if existing:
        sys.exit(f"error: {', '.join(existing)} exist(s): choose another name or remove them")
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path}")
    print(f"next: make plan MODEL={args.name}   (renders the chat template on the data, checks the batch arithmetic)")


if __name__ == "__main__":
    main()
