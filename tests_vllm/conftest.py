"""Tests against a real vLLM engine, run by `make test-vllm` in .venv-vllm (CPU build of vLLM, offline).

They live outside tests/ because the main environment has no vLLM: `make test` never collects them, and run
with any other interpreter they skip as a whole. Engines are started in this process (colocate mode) with a
small CPU KV cache, so the run fits a 2-core, shared-memory machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ring_trl  # noqa: F401  (TRL/transformers shims; must precede any TRL import)

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default is a share of all RAM
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # colocate: the engine lives in this process

VLLM_MISSING = importlib.util.find_spec("vllm") is None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if VLLM_MISSING:  # e.g. run with .venv: skip cleanly instead of failing on imports
        skip = pytest.mark.skip(reason="needs vLLM: `make setup-vllm`, then `make test-vllm`")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Ring model exactly as `make tiny-model` builds it (MTP layer included), in a temp folder."""
    out = tmp_path_factory.mktemp("ring-tiny")
    subprocess.run(
        [sys.executable, "-m", "ring_trl.models.tiny", "--output", str(out)], check=True, cwd=REPO_ROOT
    )
    return out


@pytest.fixture(scope="session")
def sharpened_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model whose output head is scaled up: next-token distributions are peaked instead of
    near-uniform, as in a trained model, so bf16 rounding moves log-probs visibly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("ring-tiny-sharp")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(SHARPEN_FACTOR)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    for code in tiny_model_dir.glob("*.py"):
        (out / code.name).write_text(code.read_text())
    config = json.loads((out / "config.json").read_text())
    assert config.get("use_rmsnorm") is True
    return out


SHARPEN_FACTOR = 24.0

BATCH = 8
DISTRIBUTED_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _length_reward(prompts, completions, completion_ids, **_):
    return [float(len(ids) % 4) for ids in completion_ids]


def shut_down_engine(trainer) -> None:
    """Release a colocated engine and the torch.distributed group vLLM opened for it, so the next trainer in
    this process starts like the first (otherwise accelerate sees a process group and wraps the model in DDP)."""
    import gc

    from accelerate.state import AcceleratorState
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    trainer.llm = None
    gc.collect()
    destroy_model_parallel()
    destroy_distributed_environment()
    AcceleratorState._reset_state(reset_partial_state=True)
    for key, value in trainer.environment_before.items():  # TRL's colocate set RANK, WORLD_SIZE, MASTER_*...
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def make_colocate_trainer():
    """Factory: an IcePopGRPOTrainer on a model folder with a colocated vLLM engine of `engine_dtype`."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ring_trl.compat import ensure_warnings_issued
    from ring_trl.grpo.config import IcePopGRPOConfig
    from ring_trl.grpo.trainer import IcePopGRPOTrainer
    from ring_trl.grpo.vllm_compat import engine_options

    def make(model_dir: Path, output_dir: Path, engine_dtype: str, **overrides):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32)
        ensure_warnings_issued(model)
        settings = {
            "output_dir": str(output_dir),
            "per_device_train_batch_size": BATCH,
            "num_generations": 4,
            "max_prompt_length": 32,
            "max_completion_length": 16,
            "use_cpu": True,
            "bf16": False,
            "report_to": "none",
            "save_strategy": "no",
            "logging_steps": 1,
            "seed": 0,
            "use_vllm": True,
            "vllm_mode": "colocate",
            **overrides,
        }
        dataset = Dataset.from_list(
            [{"prompt": [{"role": "user", "content": f"What is {i} * 3?"}]} for i in range(16)]
        )
        environment_before = {key: os.environ.get(key) for key in DISTRIBUTED_VARIABLES}
        with engine_options(dtype=engine_dtype, enforce_eager=True, max_num_batched_tokens=512):
            trainer = IcePopGRPOTrainer(
                model=model,
                reward_funcs=[_length_reward],
                args=IcePopGRPOConfig(**settings),
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        trainer.environment_before = environment_before
        return trainer

    return make


@pytest.fixture(scope="session")
def shut_down():
    return shut_down_engine
