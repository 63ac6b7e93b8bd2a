"""The server route (`vllm_mode: server`) on CPU, as far as it can run without a GPU.

`python -m ring_trl.grpo.vllm_serve` (TRL's `trl vllm-serve` with vllm_compat) is started for real and queried
with TRL's own VLLMClient. What cannot run here: TRL's weight broadcast, which is NCCL-only
(`PyNcclCommunicator`, and the client calls `torch.cuda.current_device()`), so the server-side half of the sync
(staging + one bulk reload + CPU repack) is exercised in-process by handing it the weights directly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
FP32_TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from trl.extras.vllm_client import VLLMClient

    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable, "-m", "ring_trl.grpo.vllm_serve",
        "--model", str(tiny_model_dir), "--dtype", "float32", "--enforce_eager", "true",
        "--max_model_len", "256", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, env=os.environ
        )
    try:
        _wait_until_healthy(process, port, log)
        yield VLLMClient(base_url=f"http://127.0.0.1:{port}", connection_timeout=10)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(process: subprocess.Popen, port: int, log: Path, timeout_s: float = 600) -> None:
    """Poll the server's /health/ until it answers; fail at once (with its log) if the process dies."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}; its log:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health/", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(2)
    pytest.fail(f"the server did not answer within {timeout_s:.0f} s; its log:\n{log.read_text()[-4000:]}")


def _trainer_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    start = len(prompt_ids) - 1
    positions = torch.arange(start, start + len(completion_ids))
    return logps[positions, torch.tensor(completion_ids)]


def test_trl_server_generates_ring_completions_with_the_trainers_logprobs(
    server, tiny_model_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    long_prompt = "the number " * 30 + "is"
    output = server.generate(
        prompts=["What is 2 + 3?", long_prompt],
        n=2,
        temperature=1.0,
        top_k=-1,
        max_tokens=8,
        truncate_prompt_tokens=12,  # TRL passes max_prompt_length here; vLLM 0.32 has no such SamplingParams field
    )
    full = tokenizer.encode(long_prompt)
    assert len(full) > 12 and output["prompt_ids"][1] == full[-12:]  # kept the last 12 tokens, like vLLM 0.10
    assert output["prompt_ids"][0] == tokenizer.encode("What is 2 + 3?")  # short prompts untouched
    worst = 0.0
    for index, (completion, logprobs) in enumerate(
        zip(output["completion_ids"], output["logprobs"], strict=True)
    ):
        assert len(completion) == len(logprobs) > 0
        expected = _trainer_logprobs(model, output["prompt_ids"][index // 2], completion)
        worst = max(worst, float((expected - torch.tensor(logprobs)).abs().max()))
    print(f"server fp32 engine vs trainer: max |dlogp| {worst:.3g}")
    assert worst <= FP32_TOLERANCE


def test_server_side_staged_bulk_reload_serves_the_trained_weights(tiny_model_dir: Path) -> None:
    """The half of the server sync that runs without NCCL: staged weights, one reload, CPU repack."""
    from ring_trl.grpo.vllm_compat import engine_options
    from ring_trl.grpo.vllm_serve import server_llm_class
    from ring_trl.grpo.vllm_sync import engine_prompt_logprobs, engine_weights, trainer_prompt_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, trust_remote_code=True, dtype=torch.float32)
    with engine_options(dtype="float32", enforce_eager=True, max_num_batched_tokens=512):
        llm = server_llm_class()(model=str(tiny_model_dir), max_model_len=128, max_num_seqs=4, seed=0)
    torch.manual_seed(0)
    with torch.no_grad():  # "training" moved the experts, the router bias and the head
        for name, param in model.named_parameters():
            if "experts" in name or "lm_head" in name:
                param.add_(torch.randn_like(param) * 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith("expert_bias"):
                buffer.add_(torch.rand_like(buffer) * 0.05)
    probe = [5, 9, 14, 20, 33, 41, 7, 3, 120, 64, 250, 11]
    stale = float((engine_prompt_logprobs(llm, probe) - trainer_prompt_logprobs(model, probe)).abs().max())
    assert stale > 1e-3  # the engine still serves the old weights
    llm.collective_rpc("ring_stage_weights", args=(engine_weights(model),))
    llm.reset_prefix_cache()  # what TRL's client calls after pushing every weight
    synced = float((engine_prompt_logprobs(llm, probe) - trainer_prompt_logprobs(model, probe)).abs().max())
    print(f"server-side bulk reload: max |dlogp| before {stale:.3g}, after {synced:.3g}")
    assert synced <= FP32_TOLERANCE
