"""Pre-flight check of a LLaMA-Factory recipe: every file it names exists and every key is one LLaMA-Factory knows,
before minutes of start-up are spent.

`python -m ring_trl.llamafactory.preflight recipes/<name>.yaml [key=value ...]` exits 0 when the recipe can start,
2 with one line per problem otherwise. It never loads a model and never touches the network. The most common
problem it catches: a real-model recipe whose prepared folder is missing ("download the model first"). The same
check runs inside `llamafactory-cli train|export <recipe>` in this kit's .venv (ring_trl/llamafactory/cli_hook.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_prep.manifest import check_dataset_file
from ring_trl.llamafactory.arg_keys import unknown_keys_problem
from ring_trl.model_paths import (
    download_hint,
    missing_model_message,
    missing_tokenizer_message,
    missing_weights_message,
)
from ring_trl.runtime import use_offline_defaults

# Templates that only exist once our tokenizer hook has run (see ring_trl/llamafactory/hook.py).
HOOKED_TEMPLATES = {"ring_v2_sft"}


@dataclass
class Recipe:
    """A recipe's YAML plus command-line overrides, with where it came from for error messages."""

    path: Path
    args: dict[str, Any]
    repo_root: Path = field(default_factory=Path.cwd)

    def resolve(self, value: str) -> Path:
        """Relative paths in recipes are relative to the directory llamafactory-cli runs in (the repo root)."""
        path = Path(value)
        return path if path.is_absolute() else self.repo_root / path


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text) if text else ""


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, repo_root: Path | None = None
) -> Recipe:
    """Read a recipe YAML and apply `key=value` overrides the way llamafactory-cli (OmegaConf.from_cli) does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recipe not found")
    try:
        args = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ValueError(f"{path}: {where}: invalid YAML ({error})") from error
    if not isinstance(args, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of LLaMA-Factory arguments")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        args[key] = _parse_scalar(value)
    return Recipe(path=path, args=args, repo_root=repo_root or Path.cwd())


def check_model(recipe: Recipe) -> list[str]:
    value = recipe.args.get("model_name_or_path")
    if not value:
        return [f"{recipe.path}: model_name_or_path is not set"]
    model_dir = recipe.resolve(str(value))
    if not model_dir.exists():
        return [f"{recipe.path}: {missing_model_message(str(value), model_dir)}"]
    problems = []
    if not (model_dir / "config.json").is_file():
        problems.append(f"{recipe.path}: {value} has no config.json; {download_hint(Path(value))}")
    for problem in (missing_weights_message(value, model_dir), missing_tokenizer_message(value, model_dir)):
        if problem:
            problems.append(f"{recipe.path}: {problem}")
    if recipe.args.get("quantization_bit") and (model_dir / "config.json").is_file():
        layout = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get(
            "expert_layout", "fused"
        )
        if layout != "per_expert":
            problems.append(
                f"{recipe.path}: quantization_bit is set but {value}/config.json has expert_layout {layout!r}: "
                "bitsandbytes would leave the fused experts in bf16; prepare the folder with --expert-layout per_expert"
            )
    return problems


def check_template(recipe: Recipe) -> list[str]:
    template = recipe.args.get("template")
    if template not in HOOKED_TEMPLATES:
        return []
    model_dir = recipe.resolve(str(recipe.args.get("model_name_or_path", "")))
    config_path = model_dir / "tokenizer_config.json"
    if not config_path.is_file():
        return []  # check_model reports the missing folder
    auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map") or {}
    hooked = "tokenization_ring_lf" in json.dumps(auto_map.get("AutoTokenizer"))
    problems = []
    if not hooked:
        problems.append(
            f"{recipe.path}: template {template} needs the tokenizer hook in {model_dir}: "
            f"run `python -m ring_trl.llamafactory.hook {model_dir}`"
        )
    if not recipe.args.get("trust_remote_code"):
        problems.append(f"{recipe.path}: template {template} needs trust_remote_code: true")
    return problems


def check_datasets(recipe: Recipe) -> list[str]:
    names = recipe.args.get("dataset")
    if not names:
        return []
    dataset_dir = recipe.resolve(str(recipe.args.get("dataset_dir", "data")))
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        return [f"{recipe.path}: dataset_dir {dataset_dir} has no dataset_info.json"]
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        return [f"{info_path}: line {error.lineno}: invalid JSON ({error.msg})"]
    problems = []
    for name in (n.strip() for n in str(names).split(",")):
        entry = info.get(name)
        if entry is None:
            problems.append(f"{recipe.path}: dataset {name!r} is not in {info_path}")
        elif "file_name" in entry and not (dataset_dir / entry["file_name"]).exists():
            problems.append(
                f"{info_path}: dataset {name!r}: file {dataset_dir / entry['file_name']} does not exist"
            )
        # a data_prep publish that was cut short, or a file edited since it was published
        elif "file_name" in entry and (unfinished := check_dataset_file(dataset_dir / entry["file_name"])):
            problems.append(f"dataset {name!r}: {unfinished}")
    return problems


def check_deepspeed(recipe: Recipe) -> list[str]:
    deepspeed = recipe.args.get("deepspeed")
    if deepspeed and not recipe.resolve(str(deepspeed)).is_file():
        return [f"{recipe.path}: deepspeed config {deepspeed} does not exist"]
    return []


def check_adapters(recipe: Recipe) -> list[str]:
    problems = []
    adapters = recipe.args.get("adapter_name_or_path")
    for adapter in str(adapters).split(",") if adapters else []:
        if not (recipe.resolve(adapter.strip()) / "adapter_config.json").is_file():
            problems.append(f"{recipe.path}: adapter {adapter.strip()} not found (train it first)")
    return problems


def recipe_command(recipe: Recipe) -> str:
    """The llamafactory-cli command a recipe is for: export recipes name an export_dir."""
    return "export" if "export_dir" in recipe.args else "train"


def check_keys(recipe: Recipe, command: str | None = None) -> list[str]:
    """Keys LLaMA-Factory's parser would refuse, reported with its own message (plus the closest known key)."""
    problem = unknown_keys_problem(list(recipe.args), command or recipe_command(recipe))
    return [f"{recipe.path}: {problem}"] if problem else []


def check_recipe(recipe: Recipe, check_inputs: bool = True, command: str | None = None) -> list[str]:
    """All problems found; `check_inputs=False` skips what a previous step produces (model folder, adapter)."""
    problems = check_keys(recipe, command) + check_datasets(recipe) + check_deepspeed(recipe)
    if check_inputs:
        problems = check_model(recipe) + check_template(recipe) + check_adapters(recipe) + problems
    return problems


def preflight_problems(path: str | Path, overrides: list[str], command: str | None = None) -> list[str]:
    """Every problem of a recipe file plus overrides, a recipe that cannot be read included (one line each)."""
    try:
        recipe = load_recipe(path, overrides)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    return check_recipe(recipe, command=command)


def main(argv: list[str] | None = None) -> int:
    use_offline_defaults()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    problems = preflight_problems(argv[0], argv[1:])
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
