"""Install the LLaMA-Factory template hook into a model folder: `python -m ring_trl.llamafactory.hook DIR`.

Copies tokenization_ring_lf.py into DIR and points tokenizer_config.json's `auto_map.AutoTokenizer` at it. Only
the `ring_v2_sft` format needs it (the hub format uses LLaMA-Factory's built-in `bailing` template).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

HOOK_SOURCE = Path(__file__).with_name("tokenization_ring_lf.py")
HOOK_CLASS_REF = "tokenization_ring_lf.RingTokenizerFast"


def _write_json_atomically(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)


def install_template_hook(model_dir: str | Path) -> Path:
    """Make `model_dir`'s tokenizer register our LLaMA-Factory templates when loaded with trust_remote_code."""
    model_dir = Path(model_dir)
    config_path = model_dir / "tokenizer_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no tokenizer_config.json; is {model_dir} a model folder?")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: line {error.lineno}: invalid JSON ({error.msg})") from error
    target = model_dir / HOOK_SOURCE.name
    if target.is_symlink():
        target.unlink()
    shutil.copyfile(HOOK_SOURCE, target)
    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    auto_map["AutoTokenizer"] = [None, HOOK_CLASS_REF]
    config["auto_map"] = auto_map
    config["tokenizer_class"] = "RingTokenizerFast"
    _write_json_atomically(config_path, config)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a prepared Ring model folder (tokenizer_config.json inside)")
    args = parser.parse_args(argv)
    path = install_template_hook(args.model_dir)
    print(f"installed {path}; recipes using this folder need trust_remote_code: true")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
