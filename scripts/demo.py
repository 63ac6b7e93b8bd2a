"""`make demo`: the whole Ring pipeline end to end on the tiny model and the shipped sample data.

Stages run as subprocesses (the same commands a user would type), each logging to outputs/demo/logs/<stage>.log.
A heartbeat shows the newest log line while a stage runs; a failing stage stops the demo with its name and log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.manifest import check_dataset_file  # a data_prep output is used only once fully published

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
OUT = Path(os.environ.get("RING_DEMO_OUT", "outputs/demo"))
TINY = Path(os.environ.get("RING_DEMO_TINY", "models/ring-tiny"))
HEARTBEAT_SECONDS = 10.0


@dataclass
class Stage:
    name: str
    title: str
    command: list[str]
    outputs: list[Path] = field(default_factory=list)
    ok_exit_codes: tuple[int, ...] = (0,)


EVAL_DATA = "data/eval/arithmetic.jsonl"


def eval_stage(name: str, title: str, model: Path, out: Path) -> Stage:
    """A deliberately tiny evaluation (4 problems, 2 samples, 32 tokens): the point is the before/after table."""
    command = [sys.executable, "-m", "ring_trl.eval", "--model", str(model), "--data", EVAL_DATA]
    command += ["--limit", "4", "--n", "2", "--k", "1,2", "--max-new-tokens", "32", "--backend", "hf"]
    command += ["--no-progress", "--output-dir", str(out)]
    return Stage(name, title, command, [out / "summary.json"])


def stages() -> list[Stage]:
    data = OUT / "data"
    sft_dir = OUT / "sft_lora"
    merged = OUT / "sft_merged"
    grpo_dir = OUT / "grpo"
    py = sys.executable
    lf = str(VENV_BIN / "llamafactory-cli")
    return [
        Stage(
            "tiny-model",
            "Build the tiny Ring model and tokenizer",
            [py, "-m", "ring_trl.models.tiny", "--output", str(TINY)],
            [TINY / "config.json"],
        ),
        eval_stage(
            "eval-base",
            f"Evaluate the untrained model on {EVAL_DATA} (python -m ring_trl.eval)",
            TINY,
            OUT / "eval" / "base",
        ),
        Stage(
            "data-sft",
            "Build the Long-CoT SFT set from the shipped samples (data_prep build-sft)",
            [
                py,
                "-m",
                "data_prep",
                "build-sft",
                "--config",
                "data_prep/configs/demo_sft.yaml",
                "--output-dir",
                str(data),
                "--tokenizer",
                str(TINY),
            ],
            [data / "demo_sft.jsonl"],
            ok_exit_codes=(0, 3),  # 3: some rows were rejected, which the samples do on purpose
        ),
        Stage(
            "data-rlvr",
            "Build the RLVR prompt set (data_prep build-rlvr)",
            [
                py,
                "-m",
                "data_prep",
                "build-rlvr",
                "--config",
                "data_prep/configs/demo_rlvr.yaml",
                "--output-dir",
                str(data),
                "--tokenizer",
                str(TINY),
            ],
            [data / "demo_rlvr.jsonl"],
            ok_exit_codes=(0, 3),
        ),
        Stage(
            "sft",
            "LoRA SFT of the tiny model with llamafactory-cli (recipes/tiny-lora.yaml)",
            [
                lf,
                "train",
                "recipes/tiny-lora.yaml",
                f"model_name_or_path={TINY}",
                f"dataset_dir={data}",
                "dataset=demo_sft",
                f"output_dir={sft_dir}",
                "overwrite_output_dir=true",
                "num_train_epochs=4",  # 16 steps: enough for the loss to fall, ~30 s on 2 cores
            ],
            [sft_dir / "adapter_model.safetensors", sft_dir / "trainer_state.json"],
        ),
        Stage(
            "merge",
            "Merge the LoRA adapter into the model (recipes/export/tiny-merge.yaml)",
            [
                lf,
                "export",
                "recipes/export/tiny-merge.yaml",
                f"model_name_or_path={TINY}",
                f"adapter_name_or_path={sft_dir}",
                f"export_dir={merged}",
            ],
            [merged / "config.json"],
        ),
        Stage(
            "grpo",
            "IcePop GRPO from the SFT model on the RLVR set (recipes/grpo/tiny-icepop.yaml)",
            [
                py,
                "-m",
                "ring_trl.grpo",
                "recipes/grpo/tiny-icepop.yaml",
                f"model_name_or_path={merged}",
                f"dataset={data / 'demo_rlvr.jsonl'}",
                f"output_dir={grpo_dir}",
                # 8 steps of 16 completions: rollouts dominate (bf16 autocast on a CPU is ~20x slower per matmul
                # than fp32 at these shapes), so the step count, not the batch, sets the time (~1.5 min on 2 cores).
                "max_steps=8",
                "per_device_train_batch_size=16",
                "learning_rate=2.0e-3",
                "save_samples=true",  # the rollouts, for the on-policy DPO pairs below
            ],
            [grpo_dir / "trainer_state.json"],
        ),
        eval_stage(
            "eval-grpo",
            "Evaluate the model after SFT + GRPO the same way",
            grpo_dir / "final",
            OUT / "eval" / "grpo",
        ),
        Stage(
            "eval-compare",
            "Compare the two evaluations (python -m ring_trl.eval --compare)",
            [
                sys.executable,
                "-m",
                "ring_trl.eval",
                "--compare",
                str(OUT / "eval" / "base"),
                str(OUT / "eval" / "grpo"),
                "--output-dir",
                str(OUT / "eval" / "compare"),
            ],
            [OUT / "eval" / "compare" / "compare.md"],
        ),
        *dpo_stages(grpo_dir, data),
    ]


def dpo_stages(grpo_dir: Path, data: Path) -> list[Stage]:
    """RLHF on the GRPO run's own rollouts (save_samples=true): pair a better and a worse rollout of the same
    prompt and step by the GRPO reward, then a few LoRA DPO steps on those pairs (docs/rlhf.md)."""
    model = grpo_dir / "final"
    pairs = [
        sys.executable,
        "-m",
        "data_prep",
        "build-pref",
        "--from-samples",
        str(grpo_dir / "samples.jsonl"),
    ]
    pairs += ["--name", "demo_onpolicy", "--output-dir", str(data), "--tokenizer", str(TINY)]
    pairs += ["--cutoff-len", "512", "--workers", "0", "--no-progress"]
    dpo = [
        str(VENV_BIN / "llamafactory-cli"),
        "train",
        "recipes/tiny-dpo.yaml",
        f"model_name_or_path={model}",
    ]
    dpo += [f"dataset_dir={data}", "dataset=demo_onpolicy", f"output_dir={OUT / 'dpo'}", "max_steps=3"]
    return [
        Stage(
            "data-pref",
            "On-policy pairs from the GRPO rollouts (data_prep build-pref --from-samples)",
            pairs,
            [data / "demo_onpolicy.jsonl"],
        ),
        Stage(
            "dpo",
            "LoRA DPO of the GRPO model on those pairs (recipes/tiny-dpo.yaml)",
            dpo,
            [OUT / "dpo" / "trainer_state.json"],
        ),
    ]


def _heartbeat(log_path: Path, started: float, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        last = ""
        try:
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            last = lines[-1][-100:] if lines else ""
        except OSError:
            pass
        print(f"    ... {time.monotonic() - started:5.0f} s | {last}", flush=True)


def run_stage(index: int, total: int, stage: Stage, logs: Path) -> float:
    log_path = logs / f"{stage.name}.log"
    print(f"[{index}/{total}] {stage.title}", flush=True)
    started = time.monotonic()
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(log_path, started, stop), daemon=True)
    with log_path.open("w") as log:
        log.write("$ " + " ".join(stage.command) + "\n")
        log.flush()
        beat.start()
        try:
            code = subprocess.run(stage.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
        finally:
            stop.set()
            beat.join()
    elapsed = time.monotonic() - started
    missing = [str(p) for p in stage.outputs if not (REPO / p).exists()]
    missing += [
        problem for p in stage.outputs if (REPO / p).is_file() and (problem := check_dataset_file(REPO / p))
    ]
    if code not in stage.ok_exit_codes or missing:
        why = f"exit code {code}" if code not in stage.ok_exit_codes else f"missing outputs {missing}"
        print(f"\nDEMO FAILED at stage '{stage.name}' ({why}).\nLog: {log_path}\n", file=sys.stderr)
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        print("\n".join("    " + ln for ln in tail), file=sys.stderr)
        raise SystemExit(1)
    print(f"    done in {elapsed:.1f} s", flush=True)
    return elapsed


def _log_history(run_dir: Path) -> list[dict]:
    state = REPO / run_dir / "trainer_state.json"
    return json.loads(state.read_text()).get("log_history", []) if state.exists() else []


def _step_values(history: list[dict], key: str) -> list[float]:
    return [
        row[key] for row in history if isinstance(row.get(key), (int, float)) and "train_runtime" not in row
    ]


def _first_last(history: list[dict], key: str, window: int = 1) -> tuple[float, float] | None:
    """The metric's mean over the first and the last `window` logged steps (RL rewards are noisy per step)."""
    values = _step_values(history, key)
    if not values:
        return None
    window = max(1, min(window, len(values) // 2 or 1))
    return sum(values[:window]) / window, sum(values[-window:]) / window


def _eval_table() -> str | None:
    """The base vs after-GRPO table that the eval-compare stage wrote."""
    path = REPO / OUT / "eval" / "compare" / "compare.md"
    if not path.exists():
        return None
    return path.read_text().split("\n\n", 1)[-1].strip()


def _run_mean(history: list[dict], key: str) -> float | None:
    """The metric's mean over every logged step (a first/last window capped at half the steps is not that)."""
    values = _step_values(history, key)
    return sum(values) / len(values) if values else None


def _pair_count() -> int | None:
    path = REPO / OUT / "data" / "demo_onpolicy.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else None


def summary(timings: dict[str, float]) -> dict:
    """Collect the numbers a user wants to see after the demo, and write them to summary.json."""
    report_path = REPO / OUT / "data" / "demo_sft.report.json"
    data_report = json.loads(report_path.read_text()) if report_path.exists() else {}
    sft = _log_history(OUT / "sft_lora")
    grpo = _log_history(OUT / "grpo")
    plots = sorted(
        os.path.relpath(p, REPO) if p.is_relative_to(REPO) else str(p) for p in (REPO / OUT).rglob("*.png")
    )
    result = {
        "timings_s": timings,
        "data": {
            "kept": data_report.get("kept"),
            "dropped": data_report.get("dropped"),
            "dropped_by_reason": data_report.get("dropped_by_reason", {}),
        },
        "sft_loss_first_last": _first_last(sft, "loss", window=4),
        "grpo_reward_first_last": _first_last(grpo, "reward", window=4),
        "icepop_masked_frac_first_last": _first_last(grpo, "icepop/masked_frac", window=4),
        "icepop_masked_frac_mean": _run_mean(grpo, "icepop/masked_frac"),
        "plots": plots,
        "eval_compare": _eval_table(),
        "dpo_pairs": _pair_count(),
        "dpo_margin_first_last": _first_last(_log_history(OUT / "dpo"), "rewards/margins"),
    }
    (REPO / OUT / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def _fmt_pair(pair: tuple[float, float] | None) -> str:
    return f"{pair[0]:.4f} -> {pair[1]:.4f}" if pair else "n/a"


def print_summary(result: dict) -> None:
    data = result["data"]
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(data["dropped_by_reason"].items())) or "none"
    print("\n=== Demo summary ===")
    print(f"SFT data      kept {data['kept']}, dropped {data['dropped']} ({reasons})")
    print(f"SFT loss      {_fmt_pair(result['sft_loss_first_last'])} (mean of the first / last 4 steps)")
    print(f"GRPO reward   {_fmt_pair(result['grpo_reward_first_last'])} (mean of the first / last 4 steps)")
    masked = result["icepop_masked_frac_mean"]
    print(
        f"IcePop masked {_fmt_pair(result['icepop_masked_frac_first_last'])} (first / last 4 steps); "
        f"{masked * 1000:.2f} per mille of completion tokens over the run"
        if masked is not None
        else "IcePop masked n/a"
    )
    if result.get("eval_compare"):
        print(f"Evaluation    {EVAL_DATA}, 4 problems x 2 samples, before SFT (base) vs after GRPO (grpo):")
        print("\n".join(("    " + line).rstrip() for line in result["eval_compare"].splitlines()))
    print(
        f"DPO margin    {_fmt_pair(result['dpo_margin_first_last'])} (first / last step) on "
        f"{result['dpo_pairs']} on-policy pair{'' if result['dpo_pairs'] == 1 else 's'} of GRPO rollouts"
    )
    print(
        f"Total time    {sum(result['timings_s'].values()):.0f} s "
        + str({k: round(v) for k, v in result["timings_s"].items()})
    )
    print("Plots:")
    for plot in result["plots"]:
        print(f"  {plot}")
    print(f"Everything is under {OUT}/ (summary.json, logs/).")


def main() -> None:
    os.chdir(REPO)
    logs = REPO / OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    plan = stages()
    timings: dict[str, float] = {}
    for index, stage in enumerate(plan, start=1):
        timings[stage.name] = run_stage(index, len(plan), stage, logs)
    print_summary(summary(timings))


if __name__ == "__main__":
    main()
