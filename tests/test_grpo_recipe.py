"""The `python -m ring_trl.grpo` entry point: the tiny IcePop recipe end to end, and clear errors for bad input."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ring_trl.grpo.__main__ import main
from ring_trl.grpo.data import DatasetFormatError, load_prompt_dataset
from ring_trl.grpo.recipe import RecipeError, load_recipe
from tests.conftest import REPO_ROOT
from tests.test_readme import write_rlvr_example

ICEPOP_METRICS = (
    "masked_frac",
    "masked_frac_low",
    "masked_frac_high",
    "ratio_min",
    "ratio_mean",
    "ratio_max",
    "mismatch_kl",
    "logp_diff_mean",
    "logp_diff_max",
    "masked_tokens",
    "tokens",
)


def _scalars(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def test_tiny_icepop_recipe_runs_and_logs_every_metric(
    repo_root: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.chdir(repo_root)
    steps = 3
    code = main(
        [
            "recipes/grpo/tiny-icepop.yaml",
            f"model_name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path}",
            f"max_steps={steps}",
            # Shorter completions than the recipe's 32 keep it quick; a band of +-0.1% instead of +-1% makes
            # "bf16 rollouts mask some tokens" hold on any CPU (dozens per step instead of a handful per run).
            "max_completion_length=16",
            "per_device_train_batch_size=4",  # one prompt x num_generations=4 per step
            "icepop_alpha=0.999",
            "icepop_beta=1.001",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    console = printed.out + printed.err
    assert "'icepop/masked_frac'" in console  # the per-step log line
    assert f"plot:        {tmp_path / 'reward_masked_frac.png'}" in console

    scalars = _scalars(tmp_path / "tensorboard")
    for name in ICEPOP_METRICS:
        assert [step for step, _ in scalars[f"train/icepop/{name}"]] == list(range(1, steps + 1)), name
    for name in (
        "reward",
        "loss",
        "rewards/failures",
        "rewards/math_answer/mean",
        "rewards/math_answer/failures",
    ):
        assert len(scalars[f"train/{name}"]) == steps, name
    # rollouts run in bf16 autocast while training runs in fp32: the mismatch is measured and some tokens masked
    assert all(value > 0 for _, value in scalars["train/icepop/logp_diff_max"])
    assert sum(value for _, value in scalars["train/icepop/masked_tokens"]) > 0
    assert "train/icepop/masked_entropy" in scalars

    png = tmp_path / "reward_masked_frac.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = tmp_path / "final"
    assert (final / "model.safetensors").is_file()
    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["BailingMoeV2ForCausalLM"]
    assert (final / "tokenizer.json").is_file()
    assert not (tmp_path / "final.tmp").exists()


def test_recipe_overrides_and_errors(repo_root: Path, tmp_path: Path) -> None:
    recipe = load_recipe(
        repo_root / "recipes/grpo/tiny-icepop.yaml",
        ["max_steps=7", "training.icepop_beta=2.5", "max_samples=4", "report_to=[]"],
    )
    assert recipe.training["max_steps"] == 7
    assert recipe.training["icepop_beta"] == 2.5
    assert recipe.max_samples == 4
    assert next(r.function for r in recipe.rewards) == "ring_trl.grpo.rewards:math_answer"

    # YAML 1.1 reads `2e-3` as a string; both overrides and recipe files must give the trainer a float.
    assert load_recipe(repo_root / "recipes/grpo/tiny-icepop.yaml", ["learning_rate=2e-3"]).training[
        "learning_rate"
    ] == pytest.approx(0.002)
    sci = tmp_path / "sci.yaml"
    sci.write_text(
        "model_name_or_path: m\ndataset: d.jsonl\nrewards: [x:y]\ntraining: {learning_rate: 5e-7}\n"
    )
    assert load_recipe(sci).training["learning_rate"] == pytest.approx(5e-7)

    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\ndataset: d.jsonl\nrewards: [x:y]\nlearning_rate: 1\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown key 'learning_rate'; allowed"):
        load_recipe(bad)
    bad.write_text("model_name_or_path: m\ndataset: d.jsonl\n")
    with pytest.raises(RecipeError, match="missing required key 'rewards'"):
        load_recipe(bad)
    bad.write_text("model_name_or_path: m\ndataset: d.jsonl\nrewards: [{function: a:b, wieght: 2}]\n")
    with pytest.raises(RecipeError, match=r"rewards\[0\] has unknown keys \['wieght'\]"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(repo_root / "recipes/grpo/tiny-icepop.yaml", ["max_steps"])
    assert main([str(tmp_path / "missing.yaml")]) == 2


def test_prompt_set_errors_name_file_and_line(tmp_path: Path) -> None:
    good = {
        "id": "a",
        "source": "s",
        "prompt": [{"role": "user", "content": "1+1?"}],
        "answer": "2",
        "task": "math",
    }
    path = tmp_path / "set.jsonl"
    cases = [
        ("{not json", "invalid JSON"),
        (json.dumps({**good, "prompt": []}), "'prompt' must be a non-empty list"),
        (json.dumps({**good, "task": "poetry"}), "'task' must be one of"),
        (json.dumps({**good, "tests": [{"input": 1}]}), r"tests\[0\]"),
        (json.dumps({**good, "prompt": [{"role": "bot", "content": "x"}]}), r"prompt\[0\].role"),
        (json.dumps({k: v for k, v in good.items() if k != "answer"}), "math row needs a string 'answer'"),
    ]
    for line, message in cases:
        path.write_text(json.dumps(good) + "\n\n" + line + "\n")
        with pytest.raises(DatasetFormatError, match=f"{path}:3: .*{message}"):
            load_prompt_dataset(path)
    code_row = {**good, "task": "code", "tests": [{"input": "1\n", "output": "2\n"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(code_row) + "\n")
    dataset = load_prompt_dataset(path)
    assert len(dataset) == 2 and dataset[1]["tests"] == [{"input": "1\n", "output": "2\n"}]
    assert dataset[0]["tests"] is None


def test_example_task_recipe_trains_with_a_reward_from_a_file(
    repo_root: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from ring_trl.grpo.build import build_rewards

    monkeypatch.chdir(repo_root)
    recipe = load_recipe(repo_root / "recipes/grpo/examples/my_task.yaml")
    rewards, weights = build_rewards(recipe)
    assert [r.__name__ for r in rewards] == ["reversed_word", "think_format"] and weights == [1.0, 0.2]
    scores = rewards[0](
        prompts=[0, 0, 0], completions=["x</think>elppa", "x</think>elpxx", "no answer"], answer=["elppa"] * 3
    )
    assert scores == [1.0, 0.3, 0.0]
    assert rewards[0].take_failure_count() == 0
    # Training a task whose reward lives in a .py file is covered by the README example below; here the
    # shipped example passes the pre-flight (model, tokenizer, template, dataset, rewards on row 1).
    assert (
        main(["recipes/grpo/examples/my_task.yaml", f"model_name_or_path={tiny_model_dir}", "--preflight"])
        == 0
    )


@pytest.mark.parametrize("name", ["ring-mini-icepop", "ring-flash-icepop"])
def test_gpu_recipes_parse_and_their_rewards_load(repo_root: Path, name: str) -> None:
    from ring_trl.grpo.build import build_rewards

    recipe = load_recipe(repo_root / f"recipes/grpo/{name}.yaml")
    assert recipe.training["use_vllm"] is True
    assert recipe.training["icepop_alpha"] == 0.5 and recipe.training["icepop_beta"] == 5.0
    assert (
        recipe.training["temperature"] == 1.0
        and recipe.training["top_p"] == 1.0
        and recipe.training["beta"] == 0.0
    )
    rewards, _ = build_rewards(recipe)
    assert {r.__name__ for r in rewards} >= {"math_answer", "code_tests", "think_format", "overlong_penalty"}


# ---------------------------------------------------------------------------------------- errors and pre-flight
def _task_folder(root: Path, model_dir: Path, rows: list[dict] | None = None) -> Path:
    """A small user task: prompt file, a reward file and a recipe naming them with relative paths."""
    root.mkdir(parents=True, exist_ok=True)
    rows = rows or [
        {"prompt": [{"role": "user", "content": f"Reverse '{w}'."}], "answer": w[::-1]}
        for w in ("abc", "dog")
    ]
    (root / "task.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "task_reward.py").write_text(
        "from ring_trl.grpo.rewards.text import completion_text, final_answer\n\n\n"
        "def exact(prompts, completions, answer, **_):\n"
        "    return [float(final_answer(completion_text(c)) == a) for c, a in zip(completions, answer)]\n"
    )
    recipe = root / "task.yaml"
    recipe.write_text(
        f"model_name_or_path: {model_dir}\n"
        "dataset: task.jsonl\n"
        "rewards:\n  - {function: task_reward.py:exact}\n"
        "training: {output_dir: out, num_generations: 2, per_device_train_batch_size: 2, "
        "max_completion_length: 4, max_steps: 1, use_cpu: true, bf16: false, report_to: []}\n"
    )
    return recipe


def _error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if ": error: " in line]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["learning_rate=abc"], r"training\.learning_rate: input should be a valid number, got 'abc'"),
        (["learning_rate=-1e-3"], r"training: learning_rate must be > 0, got -0\.001"),
        (["icepop_alpha=2", "icepop_beta=1"], r"icepop_alpha/icepop_beta: IcePop needs"),
        (
            ["training.lerning_rate=0.1"],
            r"unknown key 'training\.lerning_rate' \(did you mean 'training\.learning_rate'",
        ),
        (["save_strategy=stepz"], r"training\.save_strategy: must be one of"),
        (["generation_kwargs={top_p: 0.9}"], r"generation_kwargs\.top_p=0\.9: with IcePop"),
        (["max_samples=ten"], r"max_samples: input should be a valid integer"),
        (
            ["rewards=[{function: 'ring_trl.grpo.rewards:think_format', weight: heavy}]"],
            r"rewards\[0\]\.weight",
        ),
        (["dataset=nowhere.jsonl"], r"dataset file not found: nowhere\.jsonl"),
        (["model_name_or_path=models/nowhere"], r"model folder models/nowhere does not exist; download"),
        (["rewards=[no_such_module:fn]"], r"cannot import module 'no_such_module'"),
    ],
)
def test_recipe_and_override_errors_are_one_line_with_exit_2(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, overrides: list[str], message: str
) -> None:
    recipe = _task_folder(tmp_path / "task", tiny_model_dir)
    assert main([str(recipe), *overrides]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert re.search(message, lines[0]), lines[0]


def test_dataset_rows_without_prompt_and_bf16_without_gpu_are_reported_together(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = _task_folder(tmp_path / "task", tiny_model_dir)
    (tmp_path / "task" / "task.jsonl").write_text('{"prompt": "1+1?", "answer": "2"}\n{"answer": "3"}\n')
    assert main([str(recipe), "bf16=true", "use_cpu=false"]) == 2
    lines = _error_lines(capsys)
    assert any(re.search(r"task\.jsonl:2: missing required field 'prompt'", line) for line in lines), lines
    if not torch.cuda.is_available():
        assert any("bf16: true needs a bf16-capable GPU" in line and "bf16: false" in line for line in lines)
        assert len(lines) == 2


def test_relative_paths_resolve_against_the_recipe_file(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    recipe_path = _task_folder(tmp_path / "task", tiny_model_dir)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = load_recipe(recipe_path, ["logging_dir=logs"])
    assert recipe.dataset == str(tmp_path / "task" / "task.jsonl")
    assert recipe.rewards[0].function == f"{tmp_path / 'task' / 'task_reward.py'}:exact"
    assert recipe.training["output_dir"] == str(tmp_path / "task" / "out")
    assert (
        recipe.training["logging_dir"] == "logs"
    )  # command-line paths stay relative to the current directory
    # the shipped recipes name the kit's folders from their own place
    shipped = load_recipe(REPO_ROOT / "recipes/grpo/ring-mini-icepop.yaml")
    assert shipped.model_name_or_path == str(REPO_ROOT / "models/Ring-mini-2.0")


def test_preflight_checks_tokenizer_template_columns_and_rewards(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from ring_trl.grpo.preflight import PreflightError, run_preflight

    recipe_path = _task_folder(tmp_path / "task", tiny_model_dir)
    checked = run_preflight(load_recipe(recipe_path))
    assert checked.notes[0] == "rewards on row 1 with its reference answer: exact=1.0"

    bare = tmp_path / "bare-model"
    shutil.copytree(tiny_model_dir, bare, ignore=shutil.ignore_patterns("chat_template.jinja"))
    problems = _problems(run_preflight, PreflightError, recipe_path, [f"model_name_or_path={bare}"])
    assert len(problems) == 1 and "has chat prompts but" in problems[0] and "no chat template" in problems[0]
    (bare / "tokenizer.json").unlink()
    problems = _problems(run_preflight, PreflightError, recipe_path, [f"model_name_or_path={bare}"])
    assert len(problems) == 1 and "has no tokenizer files" in problems[0]

    # a column the reward needs, a reward that raises on a real row: both named before the model loads
    (tmp_path / "task" / "task.jsonl").write_text('{"prompt": [{"role": "user", "content": "hi"}]}\n')
    problems = _problems(run_preflight, PreflightError, recipe_path, [])
    assert len(problems) == 1 and re.search(
        r"task_reward\.py:exact needs the dataset column\(s\) \['answer'\]", problems[0]
    )
    (tmp_path / "task" / "task.jsonl").write_text('{"prompt": "hi", "answer": "x"}\n')
    raising = tmp_path / "task" / "raising.py"
    raising.write_text("def exact(prompts, completions, answer, **_):\n    return 1 / 0\n")
    problems = _problems(run_preflight, PreflightError, recipe_path, [f"rewards=['{raising}:exact']"])
    assert len(problems) == 1 and "fails on row 1" in problems[0] and "ZeroDivisionError" in problems[0], (
        problems
    )


def _problems(run_preflight, error_type, recipe_path: Path, overrides: list[str]) -> list[str]:
    with pytest.raises(error_type) as caught:
        run_preflight(load_recipe(recipe_path, overrides))
    return caught.value.problems


def test_offline_defaults_reach_an_already_imported_hub(monkeypatch) -> None:
    """`import ring_trl` imports huggingface_hub; the CLI's offline default must still take effect."""
    import huggingface_hub.constants as hub_constants

    from ring_trl.runtime import use_offline_defaults

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    use_offline_defaults()
    assert hub_constants.HF_HUB_OFFLINE is True


def test_sigterm_saves_a_checkpoint_and_resume_auto_continues_from_it(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ring_trl.grpo.lifecycle import complete_checkpoints

    recipe = _task_folder(tmp_path / "task", tiny_model_dir)
    out = tmp_path / "task" / "out"
    run = [str(recipe), "save_steps=1", "save_total_limit=2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "ring_trl.grpo", *run, "max_steps=1000"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not complete_checkpoints(out):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=300)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, output
    checkpoint = complete_checkpoints(out)[-1]
    step = int(checkpoint.name.removeprefix("checkpoint-"))
    assert f"stopped by SIGTERM after step {step}: checkpoint {checkpoint}" in output
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "rng_state.pth").is_file()
    assert not (out / "final").exists()  # a stopped run publishes no final model

    assert main([*run, f"max_steps={step + 1}", "resume=auto"]) == 0
    assert f"resuming from {checkpoint}" in capsys.readouterr().err
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == step + 1
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, step + 2))
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["ring-mini-icepop", "ring-flash-icepop"])
def test_ring_recipes_checkpoint_with_optimizer_state(repo_root: Path, name: str) -> None:
    training = load_recipe(repo_root / f"recipes/grpo/{name}.yaml").training
    assert training["save_strategy"] == "steps" and training["save_steps"] == 50
    assert training["save_total_limit"] >= 1 and not training.get("save_only_model", False)


def test_reward_spread_warning_names_what_to_check(caplog: pytest.LogCaptureFixture) -> None:
    from ring_trl.grpo.reward_spread import RewardSpreadWatch

    watch = RewardSpreadWatch(patience=3)
    flat = {"frac_reward_zero_std": 1.0, "rewards/exact/mean": 0.0, "rewards/failures": 0.0}
    with caplog.at_level("WARNING", logger="ring_trl.grpo.reward_spread"):
        for logs in (flat, flat, {"frac_reward_zero_std": 0.5}, flat, flat):
            watch.on_log(None, None, None, logs=logs)
        assert not caplog.records  # a streak of 2 after a step with spread: no warning yet
        watch.on_log(None, None, None, logs=flat)
        watch.on_log(None, None, None, logs=flat)
    assert len(caplog.records) == 1  # once per streak
    message = caplog.records[0].getMessage()
    assert "no spread for 3 logged steps" in message and "exact=0" in message
    assert "max_completion_length" in message and "num_generations" in message


def _readme_rlvr_example(task_dir: Path, model_dir: Path) -> None:
    """The three files of the README's RLVR example, verbatim but for the model path (models/ring-tiny, which here
    links to the test's tiny model)."""
    task_dir.mkdir(parents=True)
    write_rlvr_example(task_dir, "models/ring-tiny")
    (task_dir / "models").mkdir()
    (task_dir / "models" / "ring-tiny").symlink_to(model_dir, target_is_directory=True)


def test_readme_rlvr_example_runs_on_a_cpu_as_written(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    task = tmp_path / "my_task"
    _readme_rlvr_example(task, tiny_model_dir)
    monkeypatch.chdir(task)
    # Smaller rollouts than TRL's defaults (8 x 256 tokens) keep the test short; the recipe file is as written.
    small = ["num_generations=2", "per_device_train_batch_size=2", "max_completion_length=8", "report_to=[]"]
    with caplog.at_level("WARNING"):
        assert main(["my_task.yaml", *small]) == 0
    assert (task / "outputs" / "grpo" / "my_task" / "final" / "model.safetensors").is_file()
    warnings = [record.getMessage() for record in caplog.records]
    if not torch.cuda.is_available():
        assert any(message.startswith("no bf16-capable GPU found: training in fp32") for message in warnings)
    # a random tiny model never reverses the word: all rewards are 0, and the run says so
    assert any("rewards show no spread for 3 logged steps" in message for message in warnings), warnings
