"""Turn a downloaded Ring 2.0 checkpoint into a folder that runs on OUR model code.

The weights and tokenizer files are symlinked (never copied); config.json gets an `auto_map` pointing at our
copied configuration/modeling files (every other field kept); optionally a chat template from
ring_trl/chat_templates is installed. Works offline: hub ids resolve through the local Hugging Face cache.

    python -m ring_trl.models.prepare inclusionAI/Ring-mini-2.0 --chat-format ring_mini_2_0
    python -m ring_trl.models.prepare /data/Ring-mini-2.0 --output models/ring-mini
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ring_trl.model_paths import missing_tokenizer_files
from ring_trl.models.files import MODEL_CODE_FILES, auto_map_for, copy_model_code, write_folder_atomically

CHAT_TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "chat_templates"
SUPPORTED_MODEL_TYPES = ("bailing_moe", "bailing_moe_v2")
REWRITTEN_FILES = {"config.json", "tokenizer_config.json", "chat_template.jinja", *MODEL_CODE_FILES}


class PrepareError(RuntimeError):
    """A problem with the input checkpoint or the output folder, explained for the user."""


def chat_formats() -> list[str]:
    return sorted(path.stem for path in CHAT_TEMPLATE_DIR.glob("*.jinja"))


def resolve_checkpoint(model: str) -> Path:
    """A local folder as is; otherwise a hub id looked up in the local HF cache only (no network)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise PrepareError(
            f"{model}: not a folder (pass a checkpoint folder or a hub id like inclusionAI/Ring-mini-2.0)"
        )
    if model.count("/") != 1 or model.startswith((".", "/")):
        raise PrepareError(f"{model}: no such folder, and not a hub id of the form owner/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=model, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise PrepareError(
            f"{model} is not in the local Hugging Face cache ({cache}) and this tool never downloads.\n"
            f"Download it first, on a machine with network access:\n"
            f"    huggingface-cli download {model}\n"
            f"(or `hf download {model}`), or pass the path of a folder that holds the checkpoint."
        ) from error


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise PrepareError(f"{path}: missing (a Ring checkpoint folder needs it)") from error
    except json.JSONDecodeError as error:
        raise PrepareError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: expected a JSON object at the top level")
    return data


def check_config(config: dict[str, Any], path: Path) -> None:
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise PrepareError(
            f"{path}: model_type is {model_type!r}; this tool prepares Ring/Ling 2.0 checkpoints "
            f"(model_type one of {SUPPORTED_MODEL_TYPES})"
        )
    for field in ("num_hidden_layers", "hidden_size", "num_experts"):
        if not isinstance(config.get(field), int):
            raise PrepareError(f"{path}: field {field!r} is missing or not an integer")


def checkpoint_weight_names(folder: Path) -> list[str]:
    """Tensor names from the shard index, or from the safetensors headers (no tensor data is read)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise PrepareError(f"{index}: no 'weight_map' object")
        return list(weight_map)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise PrepareError(f"{folder}: no *.safetensors weights (and no model.safetensors.index.json)")
    from safetensors import safe_open

    names: list[str] = []
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            names.extend(handle.keys())
    return names


def mtp_layers_counted_in_num_hidden_layers(config: dict[str, Any], weight_names: list[str]) -> bool | None:
    """Whether the MTP layers' indices are < num_hidden_layers (copies of the remote code differ); None if no MTP."""
    from ring_trl.models.bailing_moe_v2 import modeling_bailing_moe_v2 as modeling

    try:
        return modeling.mtp_layers_counted_in_num_hidden_layers(
            int(config["num_hidden_layers"]), int(config.get("num_nextn_predict_layers") or 0), weight_names
        )
    except modeling.CheckpointMismatchError as error:
        raise PrepareError(str(error)) from error


EXPERT_LAYOUTS = ("fused", "per_expert")
# Formats whose LLaMA-Factory template is not built in: the prepared tokenizer registers it (see ring_trl.llamafactory).
FORMATS_NEEDING_LF_HOOK = ("ring_v2_sft",)


def prepare(
    model: str,
    output: Path | None = None,
    chat_format: str | None = None,
    overwrite: bool = False,
    expert_layout: str | None = None,
) -> Path:
    """Build the prepared folder atomically and return its path."""
    source = resolve_checkpoint(model)
    config_path = source / "config.json"
    config = read_json(config_path)
    check_config(config, config_path)
    missing_tokenizer = missing_tokenizer_files(source)
    if missing_tokenizer:
        raise PrepareError(
            f"{source}: no tokenizer files ({', '.join(missing_tokenizer)} missing); "
            "download the complete checkpoint (weights and tokenizer) and prepare again"
        )
    if chat_format is not None and chat_format not in chat_formats():
        raise PrepareError(f"unknown chat format {chat_format!r}; choose one of {chat_formats()}")
    if expert_layout is not None and expert_layout not in EXPERT_LAYOUTS:
        raise PrepareError(f"unknown expert layout {expert_layout!r}; choose one of {EXPERT_LAYOUTS}")
    output = (output if output is not None else Path("models") / source.name).resolve()
    if output == source:
        raise PrepareError(f"{output}: the output folder must differ from the checkpoint folder")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise PrepareError(f"{output}: already exists and is not empty (pass --overwrite to replace it)")

    return write_folder_atomically(
        output, lambda folder: _fill_folder(folder, source, config, chat_format, expert_layout)
    )


def _fill_folder(
    folder: Path, source: Path, config: dict[str, Any], chat_format: str | None, expert_layout: str | None
) -> None:
    for item in sorted(source.iterdir()):
        if item.name in REWRITTEN_FILES or item.name.startswith("."):
            continue
        (folder / item.name).symlink_to(item.absolute())

    in_layers = mtp_layers_counted_in_num_hidden_layers(config, checkpoint_weight_names(source))
    config = dict(config)
    config["auto_map"] = auto_map_for()
    # vLLM builds the q/k norms as LayerNorm (with a bias) unless told otherwise; Ring's are RMSNorms.
    config.setdefault("use_rmsnorm", True)
    if in_layers is not None:
        config["mtp_layers_in_num_hidden_layers"] = in_layers
    if expert_layout is not None:
        config["expert_layout"] = expert_layout
    _write_json(folder / "config.json", config)
    copy_model_code(folder)

    tokenizer_config_path = source / "tokenizer_config.json"
    tokenizer_config = read_json(tokenizer_config_path) if tokenizer_config_path.exists() else {}
    template_file = source / "chat_template.jinja"
    if chat_format is not None:
        template = (CHAT_TEMPLATE_DIR / f"{chat_format}.jinja").read_text(encoding="utf-8")
        tokenizer_config["chat_template"] = template
        # transformers 5 reads chat_template.jinja before tokenizer_config.json: keep both in agreement.
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    elif template_file.exists():
        (folder / "chat_template.jinja").symlink_to(template_file.absolute())
    if tokenizer_config or tokenizer_config_path.exists():
        _write_json(folder / "tokenizer_config.json", tokenizer_config)
    if chat_format in FORMATS_NEEDING_LF_HOOK:
        from ring_trl.llamafactory.hook import install_template_hook

        install_template_hook(folder)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="hub id (resolved in the local HF cache) or checkpoint folder")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default models/<name>)")
    parser.add_argument(
        "--chat-format", choices=chat_formats(), default=None, help="chat template to install"
    )
    parser.add_argument(
        "--expert-layout",
        choices=EXPERT_LAYOUTS,
        default=None,
        help="per_expert: one nn.Linear per expert projection, so QLoRA can quantize the experts",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    try:
        folder = prepare(args.model, args.output, args.chat_format, args.overwrite, args.expert_layout)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"prepared {args.model} -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
