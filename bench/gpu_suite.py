"""Everything about the Ring model that only a GPU can show, in one bounded run with one JSON summary.

Parts, in order (each with its own time limit; a part that fails or runs out of time is reported as such and the
next one still runs; the summary is printed even when the whole run is stopped with SIGTERM or Ctrl-C):

- expert_numerics: one MoE layer at Ring-mini's expert shape in bf16, `grouped_mm` and `sorted`, against an fp32
  reference: max error of the output and of the input gradient, and how often the routing picks the fp32 expert
  set (our fp32 router on bf16 hidden states, and, for comparison, a router computed in bf16);
- train_step: bench/train_step.py at Ring-mini shape (20 layers, LoRA on attention, seq 4096, bf16, gradient
  checkpointing): tokens/s and peak GiB per expert implementation;
- generation: cached greedy generation of a random Ring-mini in bf16, tokens/s per expert implementation;
- sft_recipe: a few steps of recipes/ring-mini-lora.yaml through `llamafactory-cli` on a RANDOM Ring-mini-shaped
  checkpoint (written once to the work folder): steady tokens/s and peak memory against the recipe's estimate;
- qlora_memory: that checkpoint loaded the way recipes/ring-mini-qlora.yaml does (per-expert layout, NF4,
  double quantization, LoRA on attention), a few training steps at the recipe's cutoff_len: peak memory against
  the recipe's estimate.

`--dry-run` runs the same code at tiny shapes on CPU (tests/test_gpu_suite.py runs it, so the suite cannot rot).

    bash bench/gpu_suite.sh                     # one H200: about 6 minutes, at most --budget seconds (460)
    bash bench/gpu_suite.sh --dry-run           # CPU, tiny shapes, under a minute
    python bench/gpu_suite.py --only sft_recipe --work outputs/bench/sft  # one part
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

PARTS = ("expert_numerics", "train_step", "generation", "sft_recipe", "qlora_memory")
# Seconds each part may take on the GPU (and at most what is left of --budget); dry runs take a few seconds each.
PART_LIMITS = {
    "expert_numerics": 45,
    "train_step": 110,
    "generation": 50,
    "sft_recipe": 200,
    "qlora_memory": 130,
}
MIN_START_SECONDS = 10
SFT_RECIPE = REPO_ROOT / "recipes" / "ring-mini-lora.yaml"
QLORA_RECIPE = REPO_ROOT / "recipes" / "ring-mini-qlora.yaml"


class PartTimeout(Exception):
    """Raised inside a part when its time is up."""


class SuiteStopped(Exception):
    """Raised inside a part when the whole run was asked to stop (SIGTERM / SIGINT)."""


@dataclass
class Context:
    dry_run: bool
    work: Path
    device: Any
    sft_steps: int
    sft_cutoff_len: int | None
    sft_overrides: list[str] = field(default_factory=list)
    tokenizer_from: Path | None = None

    @property
    def dtype(self) -> Any:
        import torch

        return torch.float32 if self.dry_run else torch.bfloat16


# ----------------------------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------------------------


def model_config(ctx: Context, implementation: str = "auto", **overrides: Any) -> Any:
    """Ring-mini's published shape (GPU) or its tiny twin (dry run)."""
    from train_step import ring_mini_config, tiny_config

    if ctx.dry_run:
        return tiny_config(implementation, **overrides)
    return ring_mini_config(20, implementation, **overrides)


def _peak_gib(ctx: Context) -> float | None:
    import torch

    if ctx.device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)


def _reset_memory(ctx: Context) -> None:
    import torch

    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(ctx.device)


def recipe_estimate_gb(recipe: Path) -> list[float] | None:
    """The 'Peak ~A-B GB' range written in a recipe's header comment."""
    match = re.search(r"Peak ~(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?) GB", recipe.read_text(encoding="utf-8"))
    return [float(match.group(1)), float(match.group(2))] if match else None


def recipe_field(recipe: Path, key: str) -> str | None:
    match = re.search(rf"^{re.escape(key)}:\s*([^#\n]+)", recipe.read_text(encoding="utf-8"), re.MULTILINE)
    return match.group(1).strip() if match else None


# ----------------------------------------------------------------------------------------------------------------
# Part 1: expert numerics
# ----------------------------------------------------------------------------------------------------------------


def expert_numerics(ctx: Context, record: dict[str, Any]) -> None:
    """bf16 kernels against an fp32 reference fed the same (bf16-representable) hidden states.

    With equal inputs an fp32 router must pick exactly the reference's experts (routing_agreement 1.0); the
    errors then measure the bf16 expert computation alone. For comparison, the agreement a router computed in
    bf16 reaches on the same inputs (what autocast used to do).
    """
    import torch

    from ring_trl.models.bailing_moe_v2.modeling_bailing_moe_v2 import BailingMoeV2SparseMoeBlock

    tokens = 256 if ctx.dry_run else 8192
    config = model_config(ctx, "sorted")
    record["shape"] = {
        "tokens": tokens,
        "hidden": config.hidden_size,
        "expert_intermediate": config.moe_intermediate_size,
        "experts": config.num_experts,
        "top_k": config.num_experts_per_tok,
    }
    torch.manual_seed(0)
    reference = BailingMoeV2SparseMoeBlock(config).to(ctx.device)
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            parameter.normal_(0.0, 0.02 if name == "gate.weight" else parameter.shape[-1] ** -0.5)
        reference.gate.expert_bias.uniform_(0.0, 0.01)
    low = torch.bfloat16
    hidden = torch.randn(1, tokens, config.hidden_size, device=ctx.device).to(low).float()
    grad_out = torch.randn(1, tokens, config.hidden_size, device=ctx.device).to(low).float()
    want_out, want_grad, want_routing = _run_block(reference, hidden, grad_out)
    scale_out, scale_grad = want_out.abs().max().item(), want_grad.abs().max().item()
    outputs = {}
    for implementation in ("grouped_mm", "sorted"):
        block = _low_precision_copy(reference, low, implementation)
        try:
            out, grad, routing = _run_block(block, hidden.to(low), grad_out.to(low))
        except (RuntimeError, NotImplementedError) as error:
            record[implementation] = {"error": _one_line(error)}
            continue
        outputs[implementation] = out
        record[implementation] = {
            "max_abs_error": round((out - want_out).abs().max().item(), 5),
            "max_rel_error": round((out - want_out).abs().max().item() / scale_out, 5),
            "grad_max_rel_error": round((grad - want_grad).abs().max().item() / scale_grad, 5),
            "routing_agreement": round((routing == want_routing).all(dim=-1).float().mean().item(), 5),
            "router_dtype": str(block.gate.weight.dtype).removeprefix("torch."),
        }
    if len(outputs) == 2:
        record["grouped_mm_vs_sorted_max_abs"] = round(
            (outputs["grouped_mm"] - outputs["sorted"]).abs().max().item(), 5
        )
    record["routing_agreement_if_router_ran_in_bf16"] = _bf16_router_agreement(
        reference, hidden, want_routing
    )


def _run_block(block: Any, hidden: Any, grad_out: Any) -> tuple[Any, Any, Any]:
    """(output, input gradient, sorted expert ids per token) of one MoE block."""
    hidden = hidden.detach().requires_grad_(True)
    out, _ = block(hidden)
    out.backward(grad_out)
    top_idx, _, _ = block.gate(hidden.detach())
    return out.detach().float(), hidden.grad.float(), top_idx.sort(dim=-1).values


def _low_precision_copy(reference: Any, dtype: Any, implementation: str) -> Any:
    import copy

    block = copy.deepcopy(reference).to(dtype)
    block.gate = copy.deepcopy(reference.gate)  # a bf16 load keeps the router in fp32
    block.experts.implementation = implementation
    return block


def _bf16_router_agreement(reference: Any, hidden: Any, want_routing: Any) -> float:
    """How often a router computed in bf16 picks the fp32 router's expert set on the same hidden states."""
    import torch

    gate = reference.gate
    flat = hidden.reshape(-1, hidden.shape[-1]).to(torch.bfloat16)
    with torch.no_grad():
        scores = torch.sigmoid(flat @ gate.weight.to(torch.bfloat16).T).float()
        routing = gate.select_experts(scores + gate.expert_bias.float()).sort(dim=-1).values
    return round((routing == want_routing).all(dim=-1).float().mean().item(), 5)


# ----------------------------------------------------------------------------------------------------------------
# Part 2: training step; part 3: generation
# ----------------------------------------------------------------------------------------------------------------


def train_step(ctx: Context, record: dict[str, Any]) -> None:
    from train_step import measure

    seq = 64 if ctx.dry_run else 4096
    record.update(
        {"layers": model_config(ctx).num_hidden_layers, "seq": seq, "batch": 1, "lora": "attention"}
    )
    results: dict[str, Any] = {}
    record["implementations"] = results
    measure(
        ["grouped_mm", "sorted"],
        lambda implementation: model_config(ctx, implementation),
        ctx.device,
        ctx.dtype,
        batch=1,
        seq=seq,
        steps=1 if ctx.dry_run else 3,
        warmup=1,
        record=results,
    )
    if not ctx.dry_run:
        record["target_tokens_per_s"] = 30000


def generation(ctx: Context, record: dict[str, Any]) -> None:
    import torch
    from train_step import keep_router_fp32

    from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM

    batch, prompt, new_tokens = (2, 16, 8) if ctx.dry_run else (8, 512, 128)
    record.update({"batch": batch, "prompt": prompt, "new_tokens": new_tokens})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(ctx.dtype)
    try:
        with torch.device(ctx.device):
            torch.manual_seed(0)
            model = keep_router_fp32(BailingMoeV2ForCausalLM(model_config(ctx, use_cache=True))).eval()
    finally:
        torch.set_default_dtype(previous)
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt), device=ctx.device)
    experts = [m for m in model.modules() if hasattr(m, "implementation") and hasattr(m, "gate_up_proj")]
    for implementation in ("grouped_mm", "sorted"):
        for module in experts:
            module.implementation = implementation
        seconds = []
        for attempt in range(2):
            _sync(ctx)
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=None,
                )
            _sync(ctx)
            if attempt:
                seconds.append(time.perf_counter() - start)
        assert out.shape[1] == prompt + new_tokens
        record[implementation] = {"tokens_per_s": round(batch * new_tokens / min(seconds), 1)}
    record["peak_gib"] = _peak_gib(ctx)


def _sync(ctx: Context) -> None:
    import torch

    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


# ----------------------------------------------------------------------------------------------------------------
# Parts 4 and 5: the recipes on a random Ring-mini-shaped checkpoint
# ----------------------------------------------------------------------------------------------------------------


def random_checkpoint(ctx: Context) -> Path:
    """A random model of Ring-mini's shape with our model code and the tiny Ring tokenizer, written once."""
    import torch

    from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM
    from ring_trl.models.files import auto_map_for, copy_model_code
    from ring_trl.models.tiny import build_tokenizer, training_corpus

    folder = ctx.work / ("ring-tiny-random" if ctx.dry_run else "ring-mini-random")
    if (folder / "config.json").is_file():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if not ctx.dry_run and shutil.disk_usage(staging).free < 40 * 2**30:
        raise RuntimeError(f"{staging}: under 40 GiB free; the random Ring-mini checkpoint needs ~34 GB")
    if ctx.tokenizer_from is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ctx.tokenizer_from)
    else:
        tokenizer = build_tokenizer(training_corpus(lines=2000))
    config = model_config(
        ctx,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["BailingMoeV2ForCausalLM"],
    )
    config.auto_map = auto_map_for()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(ctx.dtype)
    try:
        with torch.device(ctx.device):
            torch.manual_seed(0)
            model = BailingMoeV2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(staging, max_shard_size="5GB")
    del model
    copy_model_code(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    return folder


def synthetic_sft_data(folder: Path, cutoff_len: int, rows: int) -> Path:
    """Long-CoT-looking rows long enough to fill cutoff_len (the tiny tokenizer gives ~1 token per word)."""
    import random

    from data_prep.outputs import sharegpt_info_entry

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = [
        "the",
        "sum",
        "of",
        "two",
        "and",
        "three",
        "is",
        "five",
        "so",
        "we",
        "add",
        "carry",
        "the",
        "one",
        "then",
        "check",
        "the",
        "result",
        "again",
    ]
    with open(folder / "bench.jsonl", "w", encoding="utf-8") as handle:
        for i in range(rows):
            reasoning = " ".join(rng.choice(words) for _ in range(cutoff_len))
            messages = [
                {"role": "user", "content": f"Problem {i}: add {i} and {i + 1}."},
                {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{2 * i + 1}"},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    info = {"bench": sharegpt_info_entry("bench.jsonl", {"messages": "messages"})}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


def sft_recipe(ctx: Context, record: dict[str, Any]) -> None:
    model_dir = random_checkpoint(ctx)
    cutoff = ctx.sft_cutoff_len or (
        128 if ctx.dry_run else int(recipe_field(SFT_RECIPE, "cutoff_len") or 8192)
    )
    accumulation = 1 if ctx.dry_run else int(recipe_field(SFT_RECIPE, "gradient_accumulation_steps") or 1)
    steps = ctx.sft_steps
    data = synthetic_sft_data(ctx.work / "sft-data", cutoff, rows=max(8, steps * accumulation + 4))
    output = ctx.work / "sft-run"
    shutil.rmtree(output, ignore_errors=True)
    record.update(
        {
            "recipe": str(SFT_RECIPE.relative_to(REPO_ROOT)),
            "cutoff_len": cutoff,
            "gradient_accumulation_steps": accumulation,
            "steps": steps,
            "estimate_gb": recipe_estimate_gb(SFT_RECIPE),
        }
    )
    overrides = {
        "model_name_or_path": model_dir,
        "dataset": "bench",
        "dataset_dir": data,
        "cutoff_len": cutoff,
        "max_steps": steps,
        "gradient_accumulation_steps": accumulation,
        "logging_steps": 1,
        "save_strategy": '"no"',  # quoted: OmegaConf reads a bare no as False
        "plot_loss": "false",
        "report_to": "none",
        "output_dir": output,
        "include_num_input_tokens_seen": "true",
        "overwrite_cache": "true",
    }
    if ctx.dry_run:
        overrides.update({"bf16": "false", "preprocessing_num_workers": 1, "dataloader_num_workers": 0})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if ctx.device.type == "cuda":
        env["RECORD_VRAM"] = "1"
    cli = Path(sys.executable).with_name("llamafactory-cli")
    command = [
        str(cli),
        "train",
        str(SFT_RECIPE),
        *(f"{k}={v}" for k, v in overrides.items()),
        *ctx.sft_overrides,
    ]
    log_path = ctx.work / "sft-run.log"
    try:
        code = _run_logged(command, log_path, env)
    finally:
        record.update(_sft_log_summary(output))
    record["log"] = str(log_path)
    if code != 0:
        raise RuntimeError(f"llamafactory-cli exited {code}: {_last_line(log_path)}")


def _run_logged(command: list[str], log_path: Path, env: dict[str, str]) -> int:
    """Run a command in its own process group, output to `log_path`; the group is killed if we are interrupted."""
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise


def _sft_log_summary(output: Path) -> dict[str, Any]:
    """Steady tokens/s (first logged step excluded) and peak memory from LLaMA-Factory's trainer_log.jsonl.

    Each line's `throughput` is tokens seen / seconds since the start, so `total_tokens / throughput` is the exact
    time of that step (`elapsed_time` only has 1 s resolution).
    """
    log = output / "trainer_log.jsonl"
    if not log.is_file():
        return {"logged_steps": 0}
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [
        row
        for row in rows
        if row.get("loss") is not None and row.get("throughput") and row.get("total_tokens")
    ]
    summary: dict[str, Any] = {"logged_steps": len(rows)}
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        seconds = last["total_tokens"] / last["throughput"] - first["total_tokens"] / first["throughput"]
        if seconds > 0:
            summary["tokens_per_s_steady"] = round(
                (last["total_tokens"] - first["total_tokens"]) / seconds, 1
            )
    if rows:
        summary["tokens_per_s_whole_run"] = rows[-1]["throughput"]
        summary["loss"] = [row.get("loss") for row in rows]
        peaks = [row["vram_allocated"] for row in rows if "vram_allocated" in row]
        summary["peak_gib"] = max(peaks) if peaks else None
        summary["peak_reserved_gib"] = max((row.get("vram_reserved") or 0) for row in rows) or None
    return summary


def qlora_memory(ctx: Context, record: dict[str, Any]) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig

    from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM

    model_dir = random_checkpoint(ctx)
    cutoff = 64 if ctx.dry_run else int(recipe_field(QLORA_RECIPE, "cutoff_len") or 4096)
    targets = (recipe_field(QLORA_RECIPE, "lora_target") or "query_key_value,dense").split(",")
    rank = int(recipe_field(QLORA_RECIPE, "lora_rank") or 16)
    record.update(
        {
            "recipe": str(QLORA_RECIPE.relative_to(REPO_ROOT)),
            "cutoff_len": cutoff,
            "lora_target": targets,
            "estimate_gb": recipe_estimate_gb(QLORA_RECIPE),
        }
    )
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=recipe_field(QLORA_RECIPE, "quantization_type") or "nf4",
        bnb_4bit_use_double_quant=(recipe_field(QLORA_RECIPE, "double_quantization") or "true") == "true",
        bnb_4bit_compute_dtype=ctx.dtype,
    )
    start = time.perf_counter()
    model = BailingMoeV2ForCausalLM.from_pretrained(
        model_dir,
        expert_layout="per_expert",
        quantization_config=quantization,
        dtype=ctx.dtype,
        device_map={"": ctx.device.index or 0} if ctx.device.type == "cuda" else None,
    )
    record["load_seconds"] = round(time.perf_counter() - start, 1)
    record["peak_gib_after_load"] = _peak_gib(ctx)
    record["quantized_linear_layers"] = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0)
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(3, model.config.vocab_size, (1, cutoff), device=ctx.device)
    model.train()
    steps = 2 if ctx.dry_run else 3
    start = time.perf_counter()
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(ctx)
    record["tokens_per_s"] = round(steps * cutoff / (time.perf_counter() - start), 1)
    record["peak_gib"] = _peak_gib(ctx)


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

PART_FUNCTIONS: dict[str, Callable[[Context, dict[str, Any]], None]] = {
    "expert_numerics": expert_numerics,
    "train_step": train_step,
    "generation": generation,
    "sft_recipe": sft_recipe,
    "qlora_memory": qlora_memory,
}


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: Any) -> None:
        raise PartTimeout(f"stopped after its limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:400]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def environment(ctx: Context) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(ctx.device),
        "dry_run": ctx.dry_run,
    }
    if ctx.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(ctx.device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(ctx.device).total_memory / 2**30, 1)
    return info


def run_suite(ctx: Context, parts: list[str], budget: float, part_limits: bool = True) -> dict[str, Any]:
    summary: dict[str, Any] = {"suite": "ring gpu_suite", "environment": environment(ctx), "parts": {}}
    deadline = time.monotonic() + budget
    stop = {"requested": False}

    def request_stop(signum: int, _frame: Any) -> None:
        stop["requested"] = True
        raise SuiteStopped(f"stopped by signal {signum}")

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for name in parts:
            record: dict[str, Any] = {}
            summary["parts"][name] = record
            remaining = deadline - time.monotonic()
            if stop["requested"]:
                record["status"] = "not run (stopped)"
                continue
            limit = remaining if ctx.dry_run or not part_limits else min(PART_LIMITS[name], remaining)
            if limit < MIN_START_SECONDS:
                record["status"] = f"skipped: {remaining:.0f} s of the budget left"
                continue
            started, cpu_started = time.monotonic(), time.process_time()
            try:
                _reset_memory(ctx)
                with time_limit(limit):
                    PART_FUNCTIONS[name](ctx, record)
                record["status"] = "ok"
            except PartTimeout as error:
                record["status"] = f"timeout: {error}"
            except SuiteStopped as error:
                record["status"] = f"interrupted: {error}"
            except Exception as error:  # a failing part must not stop the next one
                record["status"] = f"failed: {_one_line(error)}"
                record["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
            finally:
                record["seconds"] = round(time.monotonic() - started, 1)
                record["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
                _reset_memory(ctx)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary["ok"] = all(part.get("status") == "ok" for part in summary["parts"].values())
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks the suite itself")
    parser.add_argument("--only", nargs="*", choices=PARTS, default=None, help="run only these parts")
    parser.add_argument("--budget", type=float, default=460.0, help="seconds for the whole run (default 460)")
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default outputs/bench/gpu_suite)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the summary to this file")
    parser.add_argument(
        "--no-part-limits",
        action="store_true",
        help="let each part use the whole --budget (single-part runs)",
    )
    parser.add_argument("--sft-steps", type=int, default=None, help="optimizer steps of the SFT recipe")
    parser.add_argument("--sft-cutoff-len", type=int, default=None, help="default: the recipe's cutoff_len")
    parser.add_argument("--sft-override", action="append", default=[], help="extra key=value for the recipe")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="take the tokenizer from this model folder (default: train one)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_suite: error: no CUDA GPU here; use --dry-run to check the suite on CPU", file=sys.stderr)
        return 2
    default_work = REPO_ROOT / "outputs" / "bench" / ("gpu_suite_dry" if args.dry_run else "gpu_suite")
    work = (args.work or default_work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        dry_run=args.dry_run,
        work=work,
        device=torch.device("cpu" if args.dry_run else "cuda"),
        sft_steps=args.sft_steps or (2 if args.dry_run else 4),
        sft_cutoff_len=args.sft_cutoff_len,
        sft_overrides=args.sft_override,
        tokenizer_from=args.tokenizer,
    )
    if args.dry_run:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    summary = run_suite(ctx, args.only or list(PARTS), args.budget, part_limits=not args.no_part_limits)
    text = json.dumps(summary, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print("GPU_SUITE_SUMMARY " + json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
