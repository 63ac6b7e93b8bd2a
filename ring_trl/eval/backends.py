"""Generation backends: Hugging Face (batched, left-padded, KV cache; CPU or GPU) and vLLM (when installed).

Both render prompts with the model folder's own chat template, thinking on, and return per problem its n
samples as `Generated` (text, token count, whether the token limit was hit).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ring_trl.eval.scoring import Generated
from ring_trl.runtime import UsageError


@dataclass
class SamplingSettings:
    n: int = 1
    max_new_tokens: int = 4096
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0


@dataclass
class GenerationStats:
    seconds: float = 0.0
    generated_tokens: int = 0
    problems: int = 0

    def as_dict(self) -> dict[str, float]:
        seconds = max(self.seconds, 1e-9)
        return {
            "generation_seconds": round(self.seconds, 2),
            "generated_tokens": self.generated_tokens,
            "tokens_per_s": round(self.generated_tokens / seconds, 1),
            "problems_per_s": round(self.problems / seconds, 3),
        }


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], model_dir: Path) -> str:
    """The folder's chat template with the generation prompt, thinking on (templates without the switch ignore it)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            f"{model_dir} has no chat template; prepare it with `make prepare-model MODEL=... OUT={model_dir}`"
        )
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
    )


class HFBackend:
    """transformers generate(): prompts sorted by length, left-padded batches, KV cache on."""

    name = "hf"

    def __init__(
        self, model_dir: Path, batch_size: int = 8, dtype: str = "auto", device: str = "auto"
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import ring_trl.models  # noqa: F401 - registers the Ring model classes with the Auto classes

        self.torch = torch
        self.model_dir = model_dir
        self.batch_size = max(1, batch_size)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, trust_remote_code=True, dtype=torch_dtype
        )
        self.model.to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (
            configured if isinstance(configured, list) else [configured],
            [self.tokenizer.eos_token_id],
        ):
            ids += [int(v) for v in value if v is not None and int(v) not in ids]
        if not ids:
            raise UsageError(
                f"{self.model_dir}: neither generation_config.json nor the tokenizer names an eos token"
            )
        return ids

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages, self.model_dir)

    def generate(
        self, prompts: Sequence[str], settings: SamplingSettings, progress: bool = True
    ) -> tuple[list[list[Generated]], GenerationStats]:
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # every sample of every problem, longest prompts first: batches pad little, a problem's samples stay together
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        work = [(i, j) for i in order for j in range(settings.n)]
        results: list[list[Generated | None]] = [[None] * settings.n for _ in prompts]
        remaining = [settings.n] * len(prompts)
        stats = GenerationStats(problems=len(prompts))
        bar = _progress_bar(len(prompts), progress)
        started = time.perf_counter()
        try:
            for batch_index, start in enumerate(range(0, len(work), self.batch_size)):
                batch = work[start : start + self.batch_size]
                outputs = self._generate_batch([encoded[i] for i, _ in batch], settings, batch_index)
                done = 0
                for (i, j), sample in zip(batch, outputs, strict=True):
                    results[i][j] = sample
                    stats.generated_tokens += sample.tokens or 0
                    remaining[i] -= 1
                    done += remaining[i] == 0
                stats.seconds = time.perf_counter() - started
                if bar is not None:
                    bar.set_postfix_str(f"{stats.generated_tokens / max(stats.seconds, 1e-9):.1f} tok/s")
                    bar.update(done)
        finally:
            if bar is not None:
                bar.close()
        return [[s for s in samples if s is not None] for samples in results], stats

    def _generate_batch(
        self, prompts: list[list[int]], settings: SamplingSettings, batch_index: int
    ) -> list[Generated]:
        torch = self.torch
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
        )
        sampling: dict[str, Any] = {"do_sample": False}
        if settings.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "top_k": 0,
            }
        torch.manual_seed(settings.seed * 1_000_003 + batch_index)  # each batch reproducible on its own
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids,
                use_cache=True,
                **sampling,
            )
        samples = []
        for row in output[:, width:].tolist():
            stop = next((k for k, token in enumerate(row) if token in self.eos_ids), None)
            ids = row if stop is None else row[:stop]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            tokens = len(ids) + (0 if stop is None else 1)
            samples.append(
                Generated(text, tokens, hit_limit=stop is None and len(row) >= settings.max_new_tokens)
            )
        return samples


class VLLMBackend:
    """vLLM's offline engine: continuous batching, n samples per prompt, its own progress bar with tokens/s."""

    name = "vllm"

    def __init__(
        self,
        model_dir: Path,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        seed: int = 0,
    ) -> None:
        from vllm import LLM

        self.model_dir = model_dir
        options: dict[str, Any] = {
            "model": str(model_dir),
            "trust_remote_code": True,
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
        }
        if max_model_len:
            options["max_model_len"] = max_model_len
        self.llm = LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()
        self.special_tokens = [t for t in getattr(self.tokenizer, "all_special_tokens", []) if t]

    def render(self, messages: list[dict[str, str]]) -> str:
        return render_prompt(self.tokenizer, messages, self.model_dir)

    def generate(
        self, prompts: Sequence[str], settings: SamplingSettings, progress: bool = True
    ) -> tuple[list[list[Generated]], GenerationStats]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=settings.n,
                temperature=settings.temperature,
                top_p=settings.top_p if settings.temperature > 0 else 1.0,
                max_tokens=settings.max_new_tokens,
                seed=settings.seed * 1_000_003 + i,  # per problem: independent of batching and order
                skip_special_tokens=False,
            )
            for i in range(len(prompts))
        ]
        started = time.perf_counter()
        outputs = self.llm.generate(list(prompts), params, use_tqdm=progress)
        stats = GenerationStats(seconds=time.perf_counter() - started, problems=len(prompts))
        results = []
        for output in outputs:
            samples = [
                Generated(
                    self._strip_specials(c.text), len(c.token_ids), hit_limit=c.finish_reason == "length"
                )
                for c in output.outputs
            ]
            stats.generated_tokens += sum(s.tokens or 0 for s in samples)
            results.append(samples)
        return results, stats

    def _strip_specials(self, text: str) -> str:
        """Special tokens are kept in the text (a tokenizer may mark </think> special); a trailing eos is not text."""
        stripped = True
        while stripped:
            stripped = False
            for token in self.special_tokens:
                if text.endswith(token):
                    text, stripped = text[: -len(token)], True
        return text


def _progress_bar(total: int, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="problem",
        desc="generating",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,
        # rate_noinv: always "problem/s" (tqdm would switch to "s/problem" below 1/s)
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]",
    )


def make_backend(name: str, model_dir: Path, options: dict[str, Any]) -> HFBackend | VLLMBackend:
    """`auto`: vLLM when it is installed, else Hugging Face."""
    if name == "auto":
        name = "vllm" if vllm_available() else "hf"
    if name == "vllm":
        if not vllm_available():
            raise UsageError(
                "--backend vllm: vLLM is not installed in this environment (see `make setup-vllm`)"
            )
        return VLLMBackend(
            model_dir,
            dtype=options.get("dtype", "auto"),
            tensor_parallel_size=options.get("tensor_parallel_size", 1),
            gpu_memory_utilization=options.get("gpu_memory_utilization", 0.9),
            max_model_len=options.get("max_model_len"),
            seed=options.get("seed", 0),
        )
    if name == "hf":
        return HFBackend(
            model_dir,
            options.get("batch_size", 8),
            options.get("dtype", "auto"),
            options.get("device", "auto"),
        )
    raise UsageError(f"--backend must be auto, hf or vllm, got {name!r}")
