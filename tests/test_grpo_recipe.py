"""The `python -m ring_trl.grpo` entry point: the tiny IcePop recipe end to end, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ring_trl.grpo.__main__ import main
from ring_trl.grpo.data import DatasetFormatError, load_prompt_dataset
from ring_trl.grpo.recipe import RecipeError, load_recipe

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
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown keys \['learning_rate'\]"):
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
    args = [
        "recipes/grpo/examples/my_task.yaml",
        f"model_name_or_path={tiny_model_dir}",
        f"output_dir={tmp_path}",
    ]
    assert main([*args, "max_steps=1"]) == 0
    assert (tmp_path / "final" / "model.safetensors").is_file()


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
