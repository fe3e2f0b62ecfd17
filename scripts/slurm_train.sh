#!/usr/bin/env bash
# Multi-node training on Slurm: one task per node runs scripts/train.py, which launches every stage
# of the recipe with accelerate over all nodes' GPUs. The global batch stays the recipe's
# total_batch_size (128): gradient accumulation shrinks as GPUs are added, e.g. 2 nodes × 8 GPUs ×
# 2 pairs per GPU × accumulation 4 = 128. Run it from the repository root:
#
#   sbatch --nodes=2 scripts/slurm_train.sh llama3-instruct [--key=value ...]
#
# GPUS_PER_NODE (default: Slurm's count, else 8), MAIN_PORT (29500) and PYTHON (.venv/bin/python)
# can be set in the environment; extra arguments go to scripts/train.py (e.g. --from_sft published).
#SBATCH --job-name=simpo
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
set -euo pipefail
recipe=${1:?usage: sbatch --nodes=N scripts/slurm_train.sh RECIPE [train.py arguments ...]}
shift
gpus_per_node=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# SLURM_NODEID differs per node, so it is read inside each task, not here
srun --ntasks-per-node=1 bash -c 'exec "$0" scripts/train.py "$@" --machine_rank "$SLURM_NODEID"' \
  "${PYTHON:-.venv/bin/python}" "recipes/$recipe.yaml" --num_machines "$SLURM_NNODES" \
  --num_processes $((SLURM_NNODES * gpus_per_node)) --main_process_ip "$head_node" \
  --main_process_port "${MAIN_PORT:-29500}" "$@"
