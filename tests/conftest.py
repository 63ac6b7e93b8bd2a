"""Shared test set-up: offline Hugging Face, a skip for GPU-only tests, and the tiny Ring model fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one torch thread each (and in what they start), or the
    # workers' thread pools fight over the cores and both run several times slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Files whose tests run one after the other in one worker for several minutes (the README's commands share one
# fresh clone and need their order): collected first, so that worker starts on them while the other takes the rest.
LONG_SEQUENTIAL_FILES = ("tests/test_readme.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONG_SEQUENTIAL_FILES)  # stable
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Ring model, built once per test session into a temp folder (never the user's models/)."""
    out = tmp_path_factory.mktemp("ring-tiny")
    subprocess.run(
        [sys.executable, "-m", "ring_trl.models.tiny", "--output", str(out)],
        check=True,
        cwd=REPO_ROOT,
    )
    return out


def _setup_key(root: Path) -> str:
    """The key scripts/setup_env.sh stamps into .venv (a hash of the requirement and set-up files)."""
    import hashlib

    files = ("requirements.txt", "requirements.lock", "pyproject.toml", "scripts/setup_env.sh")
    return hashlib.sha256(b"".join((root / name).read_bytes() for name in files)).hexdigest()


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the base temp of a single-process run)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a fresh clone of the working tree: every file git tracks or would track (uncommitted
    edits included), nothing it ignores (no models/, outputs/, saves/). `.venv` links to the existing one, whose
    set-up stamp must be current: otherwise `make` would reinstall from the copy and repoint the editable install.
    One clone per test run, shared by the workers (made under a file lock by the first that needs it).
    """
    import shutil

    from filelock import FileLock

    shared = _shared_folder(tmp_path_factory)
    clone = shared / "fresh" / "ring-recipes"
    with FileLock(shared / "fresh_clone.lock"):
        if (clone.parent / "complete").is_file():
            return clone
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=False,
        )
        if listed.returncode != 0:
            pytest.skip("not a git checkout: cannot tell which files a fresh clone has")
        stamp = REPO_ROOT / ".venv" / ".setup-stamp"
        if not stamp.is_file() or stamp.read_text().strip() != _setup_key(REPO_ROOT):
            pytest.fail(".venv is older than the requirement/set-up files: run `make setup` first")
        shutil.rmtree(clone.parent, ignore_errors=True)
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = REPO_ROOT / name
            if source.is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, clone / name)
        (clone / ".venv").symlink_to(REPO_ROOT / ".venv")
        (clone.parent / "complete").touch()
    return clone


def user_shell_env() -> dict[str, str]:
    """A new terminal's environment: no offline switches, no activated .venv (the README must cope with that)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "VIRTUAL_ENV", "PYTHONPATH")
    }
    venv_bin = str(REPO_ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    return env


@pytest.fixture(scope="session")
def demo_in_fresh_clone(
    fresh_clone: Path, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """`make demo` exactly as the README says, in the fresh clone, once per test run (shared by the demo and README
    tests, whichever worker they run in: the first runs it, the others read its recorded result)."""
    import json

    from filelock import FileLock

    shared = _shared_folder(tmp_path_factory)
    record = shared / "demo_result.json"
    with FileLock(shared / "demo.lock"):
        if not record.is_file():
            result = subprocess.run(
                ["make", "demo"],
                cwd=fresh_clone,
                env=user_shell_env(),
                capture_output=True,
                text=True,
                timeout=1500,
            )
            record.write_text(json.dumps([result.returncode, result.stdout, result.stderr]), encoding="utf-8")
        returncode, stdout, stderr = json.loads(record.read_text(encoding="utf-8"))
    return subprocess.CompletedProcess(["make", "demo"], returncode, stdout, stderr)
