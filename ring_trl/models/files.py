"""Where our model code lives and how a model folder points transformers at it (`auto_map`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ring_trl.folders import write_folder_atomically  # noqa: F401 - moved to ring_trl.folders; re-exported

MODEL_CODE_DIR = Path(__file__).resolve().parent / "bailing_moe_v2"
CONFIG_MODULE = "configuration_bailing_moe_v2"
MODELING_MODULE = "modeling_bailing_moe_v2"
MODEL_CODE_FILES = (f"{CONFIG_MODULE}.py", f"{MODELING_MODULE}.py")


def auto_map_for() -> dict[str, str]:
    """The `auto_map` entry that makes AutoConfig/AutoModel* load our copied code with trust_remote_code."""
    return {
        "AutoConfig": f"{CONFIG_MODULE}.BailingMoeV2Config",
        "AutoModel": f"{MODELING_MODULE}.BailingMoeV2Model",
        "AutoModelForCausalLM": f"{MODELING_MODULE}.BailingMoeV2ForCausalLM",
    }


def copy_model_code(folder: Path) -> list[Path]:
    """Copy our configuration and modeling files into `folder` (replacing whatever was there)."""
    written = []
    for name in MODEL_CODE_FILES:
        target = folder / name
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(MODEL_CODE_DIR / name, target)
        written.append(target)
    return written
