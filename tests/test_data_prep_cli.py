"""`make data` / `make data-rlvr` take the variables the docs name, and the docs name the files data_prep writes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "recipes").rglob("*.yaml")),
]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _dry_run(*args: str) -> str:
    """The data_prep command line `make` would run (make -n prints it without running anything)."""
    proc = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True)
    [line] = [ln for ln in proc.stdout.splitlines() if "-m data_prep" in ln]
    return " ".join(line[line.index("-m data_prep") :].split())


def test_both_data_targets_take_CONFIG_and_STRICT() -> None:
    assert _dry_run("data") == "-m data_prep build-sft --config data_prep/configs/demo_sft.yaml"
    assert _dry_run("data-rlvr") == "-m data_prep build-rlvr --config data_prep/configs/demo_rlvr.yaml"
    assert _dry_run("data", "CONFIG=my_mix.yaml") == "-m data_prep build-sft --config my_mix.yaml"
    assert _dry_run("data-rlvr", "CONFIG=my_rlvr.yaml") == "-m data_prep build-rlvr --config my_rlvr.yaml"
    assert _dry_run("data-rlvr", "RLVR_CONFIG=old.yaml") == "-m data_prep build-rlvr --config old.yaml"
    strict = _dry_run("data-rlvr", "CONFIG=x.yaml", "STRICT=1")
    assert strict == "-m data_prep build-rlvr --config x.yaml --strict --fail-on-rejects"
    assert _dry_run("data", "STRICT=0").endswith("demo_sft.yaml")


def test_docs_use_only_variables_the_data_targets_read() -> None:
    used = set()
    for doc in DOCS:
        for target, variable in re.findall(r"make (data-rlvr|data)\s+([A-Z_]+)=", doc.read_text()):
            used.add((target, variable))
            value = "some/file.yaml" if "CONFIG" in variable else "1"
            line = _dry_run(target, f"{variable}={value}")
            assert value in line or "--strict" in line, f"{doc.name}: make {target} ignores {variable}="
    assert ("data-rlvr", "CONFIG") in used


def test_docs_name_the_files_data_prep_writes() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert ".val.jsonl" not in text, f"{doc.name}: the validation file is <name>_val.jsonl"
        assert ".complete.json" not in text, f"{doc.name}: the completion marker is <name>.manifest.json"
    data_prep_doc = (REPO / "docs" / "data_prep.md").read_text()
    assert (
        "template: bailing_v2" not in data_prep_doc
    )  # the recipes use bailing / ring_v2_sft (docs/recipes.md)
    assert "`<name>_val.jsonl`" in data_prep_doc and "`<name>.manifest.json`" in data_prep_doc
