"""The README, docs/ and recipe comments name only things that exist: make targets and the variables each target
reads, recipe names, repository files, `python -m` modules, chat formats and LLaMA-Factory templates.

Only code is checked (fenced blocks, `inline code`, and the comments of YAML files): prose such as "make one" is not
a command.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

MARKDOWN = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
YAML_WITH_COMMENTS = sorted(
    p for pattern in ("recipes/**/*.yaml", "data_prep/configs/*.yaml") for p in REPO_ROOT.glob(pattern)
)
RECIPE_FOLDERS = {"sft": "recipes", "export": "recipes/export", "grpo": "recipes/grpo"}
# Folders whose files come with the repository (models/, outputs/, saves/ are made by running things).
SOURCE_ROOTS = ("recipes", "data_prep", "ring_trl", "scripts", "docs", "bench", "tests", "data")
PLACEHOLDER = re.compile(r"[<>{}]|\.\.\.|^[A-Z_]+$")
# Dashed names that look like recipe names but are not: the tiny model folder and a make target.
NOT_RECIPES = {"ring-tiny", "tiny-model"}


@dataclass(frozen=True)
class Snippet:
    source: Path
    text: str

    def __str__(self) -> str:
        return f"{self.source.relative_to(REPO_ROOT)}: {self.text.strip()[:120]!r}"


def _markdown_code(path: Path) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    fenced = [block for _, block in re.findall(r"^( *)```[^\n]*\n(.*?)^\1```", text, flags=re.S | re.M)]
    prose = re.sub(r"^( *)```[^\n]*\n.*?^\1```", "", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`\n]+)`", prose)
    return [Snippet(path, block) for block in fenced] + [Snippet(path, span) for span in inline]


def _yaml_comments(path: Path) -> list[Snippet]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Snippet(path, line.split("#", 1)[1]) for line in lines if "#" in line]


@cache
def snippets() -> list[Snippet]:
    found = [s for p in MARKDOWN for s in _markdown_code(p)] + [
        s for p in YAML_WITH_COMMENTS for s in _yaml_comments(p)
    ]
    return [Snippet(s.source, s.text.replace("\\\n", " ")) for s in found]  # join continued shell lines


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", text))


def _with_indirect(names: set[str], defined: dict[str, set[str]]) -> set[str]:
    """`names` plus every variable their global definitions read, transitively (DATA_STRICT reads STRICT)."""
    found, todo = set(names), list(names)
    while todo:
        for name in defined.get(todo.pop(), set()) - found:
            found.add(name)
            todo.append(name)
    return found


@cache
def make_rules() -> dict[str, set[str]]:
    """Makefile target -> the make variables its rule reads (its recipe lines, target-specific assignments and the
    global variables those read)."""
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    defined = {
        name: _variables(value)
        for name, value in re.findall(r"^([A-Z][A-Z0-9_]*)\s*[:?+]?=(.*)$", text, flags=re.M)
    }
    rules: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("\t") and current:
            rules[current] |= _variables(line)
            continue
        match = re.match(r"^([a-z][a-z0-9-]*)\s*:(?!=)(.*)$", line)
        if not match:
            current = None if line.strip() and not line.startswith("#") else current
            continue
        current = match.group(1)
        rules.setdefault(current, set())
        if "=" in match.group(2):  # `target: VAR = ...` reads the variables on its right-hand side
            rules[current] |= _variables(match.group(2))
    return {target: _with_indirect(names, defined) for target, names in rules.items()}


def make_calls() -> list[tuple[Snippet, str, dict[str, str]]]:
    """(where, target, {VAR: value}) for every `make <target> VAR=value ...` shown in code."""
    calls = []
    for snippet in snippets():
        for match in re.finditer(
            r"(?<![\w-])make ([a-z][a-z0-9-]*)((?:\s+[A-Z][A-Z0-9_]*=(?:\"[^\"]*\"|'[^']*'|[^\s)`]*))*)",
            snippet.text,
        ):
            variables = dict(re.findall(r"([A-Z][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s)`]*)", match.group(2)))
            calls.append((snippet, match.group(1), variables))
    return calls


def test_every_documented_make_target_exists() -> None:
    unknown = [f"{s}: make {target}" for s, target, _ in make_calls() if target not in make_rules()]
    assert make_calls() and not unknown, unknown


def test_every_documented_make_variable_is_read_by_its_target() -> None:
    """`make data-rlvr CONFIG=...` once rebuilt the demo set silently: data-rlvr reads RLVR_CONFIG."""
    wrong = [
        f"{s}: make {target} {var}= (the target reads {sorted(make_rules()[target])})"
        for s, target, variables in make_calls()
        if target in make_rules()
        for var in variables
        if var not in make_rules()[target]
    ]
    assert not wrong, wrong


def test_every_documented_recipe_exists() -> None:
    missing = []
    for snippet, target, variables in make_calls():
        name = variables.get("RECIPE", "").strip("\"'")
        folder = RECIPE_FOLDERS.get(target)
        if (
            folder
            and name
            and not PLACEHOLDER.search(name)
            and not (REPO_ROOT / folder / f"{name}.yaml").is_file()
        ):
            missing.append(f"{snippet}: make {target} RECIPE={name}")
    recipe_stems = {p.stem for p in (REPO_ROOT / "recipes").rglob("*.yaml")}
    for snippet in snippets():
        for name in re.findall(
            r"(?<![\w./-])((?:ring-mini|ring-flash|tiny)-[a-z0-9-]*[a-z0-9])(?![\w.-])", snippet.text
        ):
            if name not in recipe_stems and name not in NOT_RECIPES:
                missing.append(f"{snippet}: recipe {name}")
        for name in re.findall(
            r"\b((?:ring_mini|ring_flash|tiny)_(?:lora|qlora|full|merge|icepop)\w*)", snippet.text
        ):
            missing.append(f"{snippet}: {name} (recipe names use dashes)")
    assert not missing, missing


# Paths in docs are relative to the repository root, or (in recipe snippets) to a recipe's folder.
PATH_BASES = (
    REPO_ROOT,
    REPO_ROOT / "recipes",
    REPO_ROOT / "recipes" / "grpo",
    REPO_ROOT / "recipes" / "export",
)


def _exists(base: Path, path: str) -> bool:
    return any(base.glob(path.rstrip("/"))) if "*" in path else (base / path).exists()


def test_every_documented_repository_path_exists() -> None:
    missing = []
    pattern = rf"(?<![\w./-])((?:{'|'.join(SOURCE_ROOTS)})/[\w./*-]*[\w*/])"
    for snippet in snippets():
        for path in re.findall(pattern, snippet.text):
            if PLACEHOLDER.search(path):
                continue
            if not any(_exists(base, path) for base in PATH_BASES):
                missing.append(f"{snippet}: {path}")
    assert not missing, missing


def test_every_documented_python_module_exists() -> None:
    missing = []
    for snippet in snippets():
        for module in re.findall(r"python -m ([\w.]+)", snippet.text):
            if module in {"pip", "pytest", "venv"}:
                continue
            if importlib.util.find_spec(module) is None:
                missing.append(f"{snippet}: python -m {module}")
    assert not missing, missing


@pytest.fixture(scope="module")
def llamafactory_templates() -> set[str]:
    from llamafactory.data.template import TEMPLATES

    from ring_trl.llamafactory.templates import register_ring_templates

    register_ring_templates()
    return set(TEMPLATES)


def test_every_documented_template_and_chat_format_exists(llamafactory_templates: set[str]) -> None:
    from ring_trl.models.prepare import chat_formats

    wrong = []
    for snippet in snippets():
        for name in re.findall(r"\btemplate:\s*([\w.-]+)", snippet.text):
            if name not in llamafactory_templates:
                wrong.append(f"{snippet}: template {name}")
        for name in re.findall(r"--chat-format[ =]([\w.-]+)", snippet.text):
            if name not in chat_formats() and not PLACEHOLDER.search(name):
                wrong.append(f"{snippet}: --chat-format {name}")
    assert not wrong, wrong
