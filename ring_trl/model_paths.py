"""Find a model folder the kit can load, or say in one line how to get one.

Used by every tool that takes a model (SFT/GRPO pre-flights, evaluation, chat), so a missing model reads the
same everywhere: the path that was looked for, and the download + prepare commands that create it.
"""

from __future__ import annotations

from pathlib import Path

from ring_trl.runtime import UsageError

# Folder name under models/ -> hub id, for the download hint.
KNOWN_HUB_IDS: dict[str, str] = {
    "Ring-mini-2.0": "inclusionAI/Ring-mini-2.0",
    "Ring-flash-2.0": "inclusionAI/Ring-flash-2.0",
}
PER_EXPERT_SUFFIX = "-per-expert"
TINY_MODEL_DIR = Path("models/ring-tiny")
# The kit's own output folders: `<folder>/<name>` under one of them is always a local path.
LOCAL_FOLDERS = frozenset({"models", "outputs", "saves", "data"})
# What AutoTokenizer needs to load a Ring tokenizer as is: its config, plus the fast vocabulary (every Ring
# checkpoint ships tokenizer.json) or a sentencepiece model. Without them transformers tries to convert a slow
# tokenizer and fails with "You need to have sentencepiece or tiktoken installed", which names neither file.
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "tokenizer.model")


def download_hint(model_dir: Path) -> str:
    """The commands that create `model_dir` (the tiny model has its own make target)."""
    if model_dir.name == TINY_MODEL_DIR.name:
        return f"build it with `make tiny-model` (or `python -m ring_trl.models.tiny --output {model_dir}`)"
    base = model_dir.name.removesuffix(PER_EXPERT_SUFFIX)
    hub_id = KNOWN_HUB_IDS.get(base, f"<hub id of {base}>")
    hint = (
        f"download the model first: `huggingface-cli download {hub_id}`, then "
        f"`make prepare-model MODEL={hub_id} OUT={model_dir}`"
    )
    if model_dir.name.endswith(PER_EXPERT_SUFFIX):
        hint = hint.removesuffix("`") + ' ARGS="--expert-layout per_expert"` (QLoRA quantizes the experts)'
    return hint


def looks_like_hub_id(value: str) -> bool:
    """`owner/name` with no local meaning: not ./x, /x or ~/x, and not under a folder that exists here
    (models/, outputs/, saves/, ...), so `outputs/my-run` reads as a missing local folder, not a hub id."""
    if value.count("/") != 1 or value.startswith(("./", "../", "/", "~")):
        return False
    owner = value.split("/", 1)[0]
    return owner not in LOCAL_FOLDERS and not Path(owner).is_dir()


def missing_model_message(value: str, model_dir: Path) -> str:
    """One line for a model path that does not exist locally."""
    if looks_like_hub_id(value):
        local = Path("models") / Path(value).name
        return f"model {value!r} is a hub id and this kit never downloads; {download_hint(local)}"
    return f"model folder {value} does not exist; {download_hint(Path(value))}"


def require_model_folder(value: str | Path, base_dir: Path | None = None) -> Path:
    """The folder `value` names (relative to base_dir when given), or a UsageError naming how to create it."""
    text = str(value)
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_dir():
        raise UsageError(missing_model_message(text, path))
    if not (path / "config.json").is_file():
        raise UsageError(f"{text} has no config.json; {download_hint(Path(text))}")
    return path


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json")


def missing_weights_message(value: str | Path, model_dir: Path) -> str | None:
    """One line when `model_dir` has no weight files or its weight symlinks are broken, else None."""
    if not any(any(model_dir.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        return f"{value} has no weight files (*.safetensors); {download_hint(Path(str(value)))}"
    if not all(path.exists() for path in model_dir.glob("*.safetensors")):
        return f"{value} has broken weight symlinks (HF cache moved?); re-run `make prepare-model`"
    return None


def missing_tokenizer_files(model_dir: Path) -> list[str]:
    """The tokenizer files `model_dir` lacks (empty when AutoTokenizer can load it); broken symlinks count as missing."""
    missing = [] if (model_dir / TOKENIZER_CONFIG_FILE).is_file() else [TOKENIZER_CONFIG_FILE]
    if not any((model_dir / name).is_file() for name in TOKENIZER_VOCAB_FILES):
        missing.append(" or ".join(TOKENIZER_VOCAB_FILES))
    return missing


def missing_tokenizer_message(value: str | Path, model_dir: Path) -> str | None:
    """One line naming the missing tokenizer files of `model_dir`, or None when they are all there."""
    missing = missing_tokenizer_files(model_dir)
    if not missing:
        return None
    return f"{value} has no tokenizer files ({', '.join(missing)} missing); {download_hint(Path(str(value)))}"
