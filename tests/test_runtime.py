"""ring_trl.runtime: the offline defaults every kit CLI relies on really switch the hub off."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

OFFLINE_KEYS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _run_clean(code: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_KEYS} | extra
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_offline_defaults_reach_an_already_imported_hub_client() -> None:
    """`import ring_trl` imports huggingface_hub (which reads HF_HUB_OFFLINE once) before a CLI can set it."""
    code = (
        "import sys\n"
        "from ring_trl.runtime import use_offline_defaults\n"
        "assert 'huggingface_hub.constants' in sys.modules\n"
        "use_offline_defaults()\n"
        "from transformers.utils.hub import is_offline_mode\n"
        "import datasets.config\n"
        "print(is_offline_mode(), datasets.config.HF_HUB_OFFLINE)\n"
    )
    assert _run_clean(code) == "True True"


def test_an_explicit_online_choice_is_respected() -> None:
    code = (
        "from ring_trl.runtime import use_offline_defaults\n"
        "use_offline_defaults()\n"
        "from transformers.utils.hub import is_offline_mode\n"
        "print(is_offline_mode())\n"
    )
    assert _run_clean(code, HF_HUB_OFFLINE="0") == "False"


def test_a_missing_local_output_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch) -> None:
    """`outputs/my-run` (a GRPO or SFT output that was never written) must read as a missing folder."""
    import pytest

    from ring_trl.model_paths import require_model_folder
    from ring_trl.runtime import UsageError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"^model folder outputs/my-rlvr-model does not exist"):
        require_model_folder("outputs/my-rlvr-model")
    with pytest.raises(
        UsageError, match=r"is a hub id and this kit never downloads.*inclusionAI/Ring-mini-2.0"
    ):
        require_model_folder("inclusionAI/Ring-mini-2.0")
    (tmp_path / "runs").mkdir()
    with pytest.raises(UsageError, match=r"^model folder runs/x does not exist"):
        require_model_folder("runs/x")  # an existing local folder is a path, whatever its name
