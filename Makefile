# SimPO recipes. `make help` lists the targets; README.md explains them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= tiny
# Offline variables for the CPU demo and the tests: nothing may reach for the Hugging Face Hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEMO_DATA := data/demo
DEMO_OUT := outputs/tiny
DEMO_MODELS ?= sft=$(DEMO_OUT)/sft simpo=$(DEMO_OUT)/simpo
# make train / make plan: NUM_GPUS= world size (default: every GPU found), ACCELERATE_CONFIG= topology
# (default: the recipe's), FROM_SFT=published|MODEL skips SFT, OBJECTIVE=<method> runs the preference stage as
# one of the recipe's methods (dpo, ipo, ...), ARGS= more --key=value overrides.
TRAIN_FLAGS = $(if $(NUM_GPUS),--num_processes $(NUM_GPUS)) $(if $(ACCELERATE_CONFIG),--accelerate_config \
	$(ACCELERATE_CONFIG)) $(if $(FROM_SFT),--from_sft $(FROM_SFT)) $(if $(OBJECTIVE),--objective $(OBJECTIVE)) $(ARGS)
# DeepSpeed compiles a CPU op on first use; keep it (and reuse it) inside the repository
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: help install test demo demo-data demo-model train plan new-recipe sweep demo-eval onpolicy demo-onpolicy eval table \
	bench gpu-bench paper clean

help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  recipes: $(notdir $(basename $(wildcard recipes/*.yaml)))"

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed  ## Create .venv and install the pinned requirements

test: $(VENV)/.installed  ## Lint (ruff, configured in pyproject.toml), then run the test suite (CPU, offline)
	$(VENV)/bin/ruff check .
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed  ## Embedded default: tiny model, SFT -> SimPO -> judged evaluation, on CPU
	$(MAKE) --no-print-directory demo-data demo-model
	$(MAKE) --no-print-directory train MODEL=tiny
	$(MAKE) --no-print-directory demo-eval

demo-data: $(VENV)/.installed  ## Generate the demo task's SFT, preference and held-out sets
	$(OFFLINE) $(PY) scripts/make_demo_data.py --output_dir $(DEMO_DATA)

demo-model: $(VENV)/.installed  ## Build the tiny random-init Llama-3-style model and its tokenizer
	$(OFFLINE) $(PY) scripts/build_tiny_model.py --family llama3 --output_dir $(DEMO_OUT)/base \
		--data $(DEMO_DATA)/sft/train.jsonl $(DEMO_DATA)/prefs/train.jsonl

train: $(VENV)/.installed  ## Run every stage of recipes/<MODEL>.yaml on every GPU found (NUM_GPUS=, FROM_SFT=published)
	$(if $(filter tiny,$(MODEL)),$(OFFLINE)) $(PY) scripts/train.py recipes/$(MODEL).yaml $(TRAIN_FLAGS)

plan: $(VENV)/.installed  ## Dry run of make train: each stage's model, data, hyperparameters, batch arithmetic, one rendered example per split
	$(OFFLINE) $(PY) scripts/train.py recipes/$(MODEL).yaml --plan $(TRAIN_FLAGS)

new-recipe: $(VENV)/.installed  ## Start recipes/<MODEL>.yaml for a new model: BASE_MODEL= (DATA=, SFT_DATA= optional)
	$(PY) scripts/new_recipe.py $(MODEL) --model $(BASE_MODEL) $(if $(DATA),--data $(DATA)) \
		$(if $(SFT_DATA),--sft_data $(SFT_DATA))

SWEEP_ARGS ?=
sweep: $(VENV)/.installed  ## Tune recipes/<MODEL>.yaml: learning rate, then gamma/beta, then beta -> outputs/sweeps/<MODEL>/
	$(if $(filter tiny,$(MODEL)),$(OFFLINE)) $(PY) scripts/sweep.py recipes/$(MODEL).yaml $(SWEEP_ARGS) $(TRAIN_FLAGS)

demo-eval: $(VENV)/.installed  ## Answer held-out prompts with SFT and SimPO, judge by program and via alpaca_eval
	$(OFFLINE) $(PY) scripts/evaluate_demo.py --recipe recipes/tiny.yaml --heldout $(DEMO_DATA)/heldout.jsonl \
		--models $(DEMO_MODELS) --output_dir $(DEMO_OUT)/eval

onpolicy: $(VENV)/.installed  ## On-policy preference data for recipes/<MODEL>.yaml: sample, score, binarise (ARGS=--key=value)
	$(if $(filter tiny,$(MODEL)),$(OFFLINE)) $(PY) scripts/make_onpolicy.py recipes/$(MODEL).yaml $(ARGS)

demo-onpolicy: $(VENV)/.installed  ## make demo, plus SimPO on the SFT model's own samples scored by the program; one table
	$(MAKE) --no-print-directory demo-data demo-model
	$(MAKE) --no-print-directory train MODEL=tiny
	$(MAKE) --no-print-directory onpolicy MODEL=tiny
	$(OFFLINE) $(PY) scripts/train.py recipes/tiny.yaml --from_sft $(DEMO_OUT)/sft \
		"--preference.dataset_mixer={$(DEMO_DATA)/onpolicy: 1.0}" --preference.output_dir=$(DEMO_OUT)/simpo-onpolicy
	$(MAKE) --no-print-directory demo-eval \
		DEMO_MODELS="sft=$(DEMO_OUT)/sft simpo=$(DEMO_OUT)/simpo simpo-onpolicy=$(DEMO_OUT)/simpo-onpolicy"

# Benchmarks: the judge comes from the environment (JUDGE_BASE_URL, JUDGE_API_KEY, JUDGE_MODEL), or
# JUDGE=local: the demo's program on 127.0.0.1 (offline, AlpacaEval 2 on the demo's held-out prompts).
# DECODING=reference (default: as the paper's numbers were decoded) or as_configured.
EVAL_ARGS ?=
EVAL_FLAGS = $(if $(JUDGE),--judge $(JUDGE)) $(if $(DECODING),--decoding $(DECODING)) $(if $(OBJECTIVE),--objective $(OBJECTIVE)) $(EVAL_ARGS)
eval: $(VENV)/.installed  ## AlpacaEval 2, Arena-Hard, MT-Bench for recipes/$(MODEL).yaml's model (OBJECTIVE=, JUDGE=local, DECODING=, EVAL_ARGS=)
	$(if $(filter tiny,$(MODEL)),$(OFFLINE)) $(PY) scripts/evaluate.py recipes/$(MODEL).yaml $(EVAL_FLAGS)

table: $(VENV)/.installed  ## Every evaluated model beside the paper's numbers: outputs/eval/table.md, .png
	$(PY) scripts/make_table.py

bench: $(VENV)/.installed  ## Time the SimPO step against its limit, TRL CPO-SimPO, DPO, ZeRO-3 -> outputs/bench/ (DOCS=1: docs/benchmarks.md)
	$(OFFLINE) $(PY) scripts/bench_simpo.py $(if $(DOCS),--output docs/benchmarks.md) $(BENCH_ARGS)

gpu-bench: $(VENV)/.installed  ## The step benchmark on one H100/H200 node, bf16, < 8 min -> docs/benchmarks-gpu.md (WHEELS=, DRY_RUN=1: CPU)
	$(OFFLINE) PY=$(PY) scripts/gpu_bench.sh

PAPER_ARGS ?=
paper: $(VENV)/.installed  ## SimPO's paper in miniature: 11 methods + gamma sweep on the demo task -> docs/paper_reproduction.md (<30 min, CPU)
	$(MAKE) --no-print-directory demo-data demo-model
	@# one thread: the tiny model's 64-wide matrices gain nothing from two, and spinning threads slow a shared machine
	OMP_NUM_THREADS=1 $(OFFLINE) $(PY) scripts/run_paper.py $(PAPER_ARGS)

clean:  ## Remove generated data and outputs (keeps .venv)
	rm -rf data outputs
