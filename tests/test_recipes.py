"""Every recipe parses with LLaMA-Factory's own argument parser and every file it names exists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ring_trl.llamafactory.preflight import check_recipe, load_recipe
from ring_trl.models.prepare import PrepareError, prepare

REPO = Path(__file__).resolve().parents[1]
TRAIN_RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
EXPORT_RECIPES = sorted((REPO / "recipes" / "export").glob("*.yaml"))
RECIPES = TRAIN_RECIPES + EXPORT_RECIPES
REAL_MODEL_RECIPES = [p for p in RECIPES if not p.name.startswith("tiny-")]
REQUIRED = {
    "ring-mini-lora", "ring-mini-qlora", "ring-mini-full", "ring-flash-lora", "ring-flash-qlora",
    "ring-flash-full", "ring-mini-merge", "tiny-lora", "tiny-full", "tiny-lora-ds-z2", "tiny-merge",
    "ring-mini-dpo", "ring-flash-dpo", "ring-mini-rm", "tiny-dpo", "tiny-rm",
}  # fmt: skip


def _run_parse_check(paths: list[Path]) -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "ring_trl.llamafactory.parse_check", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(paths), result.stderr[-3000:]
    return lines


def test_the_recipe_set_is_complete() -> None:
    assert not REQUIRED - {p.stem for p in RECIPES}


def test_every_yaml_directly_under_recipes_is_a_train_recipe() -> None:
    """`llamafactory-cli train recipes/<name>.yaml` must work for every file there; exports live apart."""
    for recipe in TRAIN_RECIPES:
        args = yaml.safe_load(recipe.read_text())
        assert "export_dir" not in args and args.get("do_train") is True, recipe.name
        assert "_" not in recipe.stem, (
            f"{recipe.name}: recipe names use dashes (make sft RECIPE=ring-mini-lora)"
        )
    for recipe in EXPORT_RECIPES:
        assert "export_dir" in yaml.safe_load(recipe.read_text()), recipe.name


def test_every_recipe_parses_with_llamafactory(tmp_path: Path) -> None:
    misspelt = tmp_path / "misspelt.yaml"
    args = yaml.safe_load((REPO / "recipes" / "tiny-lora.yaml").read_text())
    args["lora_rnak"] = args.pop("lora_rank")
    misspelt.write_text(yaml.safe_dump(args))
    results = _run_parse_check([*RECIPES, misspelt])
    failures = [r for r in results[:-1] if not r["ok"]]
    assert not failures, failures
    assert not results[-1]["ok"] and "lora_rnak" in results[-1]["error"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_files_exist(recipe: Path) -> None:
    """Datasets (in dataset_dir/dataset_info.json and on disk) and DeepSpeed configs; models are checked below."""
    assert check_recipe(load_recipe(recipe, repo_root=REPO), check_inputs=False) == []
    args = yaml.safe_load(recipe.read_text())
    assert args.get("template") in {"bailing", "ring_v2_sft"}
    assert args.get("trust_remote_code") is True
    if "export_dir" not in args:
        assert args.get("plot_loss") is True and args.get("report_to") == "tensorboard"


@pytest.mark.parametrize("recipe", REAL_MODEL_RECIPES, ids=lambda p: p.stem)
def test_real_model_recipe_without_weights_says_download_first(recipe: Path, tmp_path: Path) -> None:
    missing = tmp_path / "models" / Path(yaml.safe_load(recipe.read_text())["model_name_or_path"]).name
    problems = check_recipe(load_recipe(recipe, [f"model_name_or_path={missing}"], repo_root=REPO))
    assert problems and "download the model first" in problems[0]
    assert "huggingface-cli download inclusionAI/Ring-" in problems[0]


def test_preflight_cli_fails_clearly_for_a_missing_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "ring_trl.llamafactory.preflight", "recipes/ring-mini-lora.yaml",
            f"model_name_or_path={tmp_path / 'Ring-mini-2.0'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert "download the model first: `huggingface-cli download inclusionAI/Ring-mini-2.0`" in result.stderr
    assert "Traceback" not in result.stderr


def test_tiny_recipes_pass_preflight_with_the_tiny_model(tiny_model_dir: Path) -> None:
    for recipe in (p for p in RECIPES if p.stem.startswith("tiny-") and "merge" not in p.stem):
        assert (
            check_recipe(load_recipe(recipe, [f"model_name_or_path={tiny_model_dir}"], repo_root=REPO)) == []
        )


def test_preflight_names_a_missing_dataset_and_deepspeed_file(tmp_path: Path) -> None:
    recipe = load_recipe(
        REPO / "recipes" / "tiny-lora.yaml",
        ["dataset=no_such_set", f"deepspeed={tmp_path / 'missing.json'}"],
        repo_root=REPO,
    )
    problems = check_recipe(recipe, check_inputs=False)
    assert any("no_such_set" in p and "dataset_info.json" in p for p in problems)
    assert any("missing.json" in p for p in problems)


def test_preflight_reports_yaml_errors_with_a_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("stage: sft\nlora_rank: [8\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: line \d+"):
        load_recipe(broken)


def test_preflight_refuses_qlora_on_fused_experts(tiny_model_dir: Path, tmp_path: Path) -> None:
    qlora = REPO / "recipes" / "ring-mini-qlora.yaml"
    problems = check_recipe(load_recipe(qlora, [f"model_name_or_path={tiny_model_dir}"], repo_root=REPO))
    assert any("expert_layout 'fused'" in p for p in problems)
    per_expert = tmp_path / "ring-tiny-per-expert"
    per_expert.mkdir()
    for item in tiny_model_dir.iterdir():
        (per_expert / item.name).symlink_to(item)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (per_expert / "config.json").unlink()
    (per_expert / "config.json").write_text(json.dumps({**config, "expert_layout": "per_expert"}))
    assert check_recipe(load_recipe(qlora, [f"model_name_or_path={per_expert}"], repo_root=REPO)) == []


def _llamafactory_refusal(args: dict, command: str) -> str:
    """The ValueError LLaMA-Factory's own parser raises for these arguments (train: run_exp, export: export_model)."""
    from llamafactory.hparams.parser import _INFER_ARGS, _TRAIN_ARGS
    from transformers import HfArgumentParser

    parser = HfArgumentParser(_INFER_ARGS if command == "export" else _TRAIN_ARGS)
    with pytest.raises(ValueError, match="Some keys are not used") as refused:
        parser.parse_dict(args)
    return str(refused.value)


def test_preflight_reports_unknown_keys_exactly_as_llamafactory(tmp_path: Path) -> None:
    """Typos in the recipe and in a key=value override: the same keys, in LLaMA-Factory's own words."""
    args = yaml.safe_load((REPO / "recipes" / "tiny-lora.yaml").read_text())
    args["lora_rnak"] = args.pop("lora_rank")
    args["templte"] = args.pop("template")
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump(args))
    recipe = load_recipe(typo, ["cutoff_length=1024"], repo_root=REPO)
    refusal = _llamafactory_refusal(recipe.args, "train")
    problems = check_recipe(recipe, check_inputs=False)
    assert [p for p in problems if "HfArgumentParser" in p] == [
        f"{typo}: {refusal} (did you mean: cutoff_length -> cutoff_len, lora_rnak -> lora_rank, templte -> template)"
    ]


def test_preflight_checks_export_recipes_against_the_export_parser(tmp_path: Path) -> None:
    """`llamafactory-cli export` parses fewer dataclasses: training keys are unknown there."""
    recipe = load_recipe(
        REPO / "recipes" / "export" / "tiny-merge.yaml", ["num_train_epochs=3"], repo_root=REPO
    )
    refusal = _llamafactory_refusal(recipe.args, "export")
    assert [p for p in check_recipe(recipe, check_inputs=False) if "HfArgumentParser" in p] == [
        f"{recipe.path}: {refusal}"
    ]


def test_allow_extra_args_switches_the_key_check_off_as_in_llamafactory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = load_recipe(REPO / "recipes" / "tiny-lora.yaml", ["lora_rnak=8"], repo_root=REPO)
    assert any("lora_rnak" in p for p in check_recipe(recipe, check_inputs=False))
    monkeypatch.setenv("ALLOW_EXTRA_ARGS", "1")
    assert check_recipe(recipe, check_inputs=False) == []


def _without_tokenizer(tiny_model_dir: Path, target: Path) -> Path:
    shutil.copytree(tiny_model_dir, target)
    (target / "tokenizer.json").unlink()
    return target


def test_preflight_refuses_a_model_folder_without_tokenizer_files(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Otherwise LLaMA-Factory fails minutes later with "You need to have sentencepiece or tiktoken installed"."""
    folder = _without_tokenizer(tiny_model_dir, tmp_path / "ring-tiny")
    problems = check_recipe(
        load_recipe(REPO / "recipes" / "tiny-lora.yaml", [f"model_name_or_path={folder}"])
    )
    assert (
        len(problems) == 1 and "no tokenizer files (tokenizer.json or tokenizer.model missing)" in problems[0]
    )
    assert "make tiny-model" in problems[0]


def test_prepare_model_refuses_a_checkpoint_without_tokenizer_files(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    downloaded = _without_tokenizer(tiny_model_dir, tmp_path / "download")
    with pytest.raises(
        PrepareError, match=r"no tokenizer files \(tokenizer.json or tokenizer.model missing\)"
    ):
        prepare(str(downloaded), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
