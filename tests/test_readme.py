"""Every command the README shows works exactly as written, from a fresh clone, offline, on the tiny model.

The README's ```bash blocks are found and run in order, in one fresh clone (tests/conftest.py:fresh_clone), each
command in a new shell the way a newcomer would: no offline switches set, `.venv` activated only once the README
has said to (`source .venv/bin/activate`). Each command must exit 0 unless the table below says otherwise:
commands that need the real Ring weights must stop at once with the download commands, and a few are not run (the
suite itself, a download). The RLVR example is written to files exactly as shown; only its model path is changed
to the tiny model, and its run is kept short with documented `key=value` overrides.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, user_shell_env

README = REPO_ROOT / "README.md"
ACTIVATE = "source .venv/bin/activate"
# What a user types at the interactive prompts (make chat): a question, then quit.
STDIN = "What is 2 + 3?\n/exit\n"
DOWNLOAD_FIRST = "huggingface-cli download inclusionAI/Ring-"


@dataclass(frozen=True)
class Expect:
    """How a README command must end when a fresh clone has no real weights."""

    exit_codes: tuple[int, ...] = (0,)
    output: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class Skip:
    why: str


# Commands (matched by their start) that need the Ring-mini/flash weights: they must stop at the pre-flight (or at
# prepare-model's cache lookup) with the download command, never wait on the network or start training.
NEEDS_WEIGHTS = {
    "make prepare-model MODEL=inclusionAI/": Expect((2,), ("huggingface-cli download inclusionAI/Ring-",)),
    "make sft RECIPE=ring-": Expect((2,), ("preflight: ", DOWNLOAD_FIRST)),
    "make export RECIPE=ring-": Expect((2,), ("preflight: ", DOWNLOAD_FIRST)),
    "llamafactory-cli train recipes/ring-": Expect((2,), ("preflight: ", DOWNLOAD_FIRST)),
    "llamafactory-cli export recipes/export/ring-": Expect((2,), ("preflight: ", DOWNLOAD_FIRST)),
    "FORCE_TORCHRUN=1": Expect((2,), ("preflight: ", DOWNLOAD_FIRST), "stops before torchrun starts"),
    "python -m ring_trl.eval --model models/Ring-": Expect((2,), (DOWNLOAD_FIRST,)),
}
OTHER_OUTCOMES = {
    # data_prep's documented exit status 3: finished, some rows rejected (the samples plant bad rows on purpose).
    "python -m data_prep ": Expect((0, 3), ("rejected",)),
}
NOT_RUN = {
    "make test": Skip("the test suite itself"),
    "make demo": Skip(
        "run once per session by the demo_in_fresh_clone fixture; tests/test_demo.py checks it"
    ),
    "huggingface-cli download": Skip("needs the network"),
    "make setup-vllm": Skip("builds the second environment (~10 min); .ci/run runs it, then make test-vllm"),
    "make test-vllm": Skip(".ci/run runs it after make setup-vllm"),
}
# The RLVR example (Stage 2, "Your own task"): its blocks become these files, its command runs next to them.
RLVR_FILES = {"json": "my_task.jsonl", "python": "my_task.py", "yaml": "my_task.yaml"}
RLVR_COMMAND = "python -m ring_trl.grpo my_task.yaml"
RLVR_SHORT_RUN = [
    "max_steps=1",
    "max_completion_length=16",
]  # key=value overrides, as documented for ring_trl.grpo


@dataclass
class Command:
    number: int
    text: str
    section: str
    activated: bool
    extra_args: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.number:02d}-{re.sub(r'[^a-z0-9]+', '-', self.text.lower())[:48].strip('-')}"


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for each `## ` section."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return [("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]


def _blocks(body: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced block, also those indented inside a list item."""
    found = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", body, flags=re.S | re.M)
    return [(language, textwrap.dedent(text)) for _, language, text in found]


def _commands(block: str) -> list[str]:
    """Shell commands of a block: continued lines joined, blank lines and whole-line comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def readme_commands() -> list[Command]:
    commands: list[Command] = []
    activated = False
    for heading, body in _sections(README.read_text(encoding="utf-8")):
        for language, block in _blocks(body):
            if language != "bash":
                continue
            for text in _commands(block):
                if text.startswith(ACTIVATE):
                    activated = True
                    continue
                commands.append(Command(len(commands), text, heading, activated))
    return commands


def _match(table: dict, text: str) -> object | None:
    return next((value for prefix, value in table.items() if text.startswith(prefix)), None)


def write_rlvr_example(folder: Path, tiny_model: str) -> Path:
    """The README's RLVR example files in `folder` (the README puts them in the kit's root), verbatim except the
    model path."""
    section = next(
        body for heading, body in _sections(README.read_text(encoding="utf-8")) if "RLVR" in heading
    )
    written = set()
    for language, block in _blocks(section):
        if language in RLVR_FILES:
            if language == "yaml":
                block, count = re.subn(
                    r"(?m)^model_name_or_path: .*$", f"model_name_or_path: {tiny_model}", block
                )
                assert count == 1, "the RLVR recipe must name exactly one model"
            (folder / RLVR_FILES[language]).write_text(block, encoding="utf-8")
            written.add(language)
    assert written == set(RLVR_FILES), f"the RLVR section must show {sorted(RLVR_FILES)} blocks"
    return folder


COMMANDS = readme_commands()


def test_the_readme_shows_activation_once_before_any_direct_command() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(ACTIVATE) == 1
    direct = [c for c in COMMANDS if not c.text.startswith(("make ", "FORCE_TORCHRUN=", "huggingface-cli "))]
    assert direct and all(c.activated for c in direct), [c.text for c in direct if not c.activated]
    assert any(c.text.startswith(RLVR_COMMAND) for c in COMMANDS), "the RLVR example must show its command"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_readme_command_works_as_written(
    command: Command, fresh_clone: Path, demo_in_fresh_clone: subprocess.CompletedProcess[str]
) -> None:
    skip = _match(NOT_RUN, command.text)
    if isinstance(skip, Skip):
        pytest.skip(skip.why)
    assert demo_in_fresh_clone.returncode == 0, "make demo failed: " + demo_in_fresh_clone.stdout[-3000:]
    expect = _match(NEEDS_WEIGHTS, command.text) or _match(OTHER_OUTCOMES, command.text) or Expect()
    assert isinstance(expect, Expect)
    text = command.text
    if text.startswith(RLVR_COMMAND):
        write_rlvr_example(fresh_clone, "models/ring-tiny")
        text = " ".join([text.split("#", 1)[0].strip(), *RLVR_SHORT_RUN])
    # A new shell per command; "activated" as the README said earlier (the activation is per shell).
    script = f"source {fresh_clone / '.venv' / 'bin' / 'activate'} && {text}" if command.activated else text
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=fresh_clone,
        input=STDIN,
        capture_output=True,
        text=True,
        env=user_shell_env(),
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode in expect.exit_codes, f"exit {result.returncode}:\n{output[-4000:]}"
    for needed in expect.output:
        assert needed in output, f"{needed!r} not in:\n{output[-4000:]}"
    assert "Traceback (most recent call last)" not in output, output[-4000:]


def test_the_preflight_transcript_in_the_readme_is_what_make_prints(fresh_clone: Path) -> None:
    """The README shows `$ make sft RECIPE=ring-mini-lora` and its output: every shown line must be printed."""
    transcripts = [
        block
        for _, body in _sections(README.read_text(encoding="utf-8"))
        for language, block in _blocks(body)
        if language in ("", "text", "console") and block.startswith("$ ")
    ]
    assert transcripts
    for transcript in transcripts:
        command, *shown = transcript.splitlines()
        result = subprocess.run(
            ["bash", "-c", command.removeprefix("$ ")],
            cwd=fresh_clone,
            capture_output=True,
            text=True,
            env=user_shell_env(),
            timeout=600,
        )
        output = (result.stdout + result.stderr).splitlines()
        for line in filter(None, shown):
            assert line in output, f"{line!r} not printed by {command!r}:\n" + "\n".join(output[-20:])


def test_rlvr_example_files_are_valid(tmp_path: Path) -> None:
    """Cheap checks of the example itself, so a broken snippet fails fast (the run above is slow)."""
    folder = write_rlvr_example(tmp_path, "models/ring-tiny")
    rows = [json.loads(line) for line in (folder / "my_task.jsonl").read_text().splitlines() if line.strip()]
    assert rows and all({"prompt", "answer"} <= set(row) for row in rows)
    compile((folder / "my_task.py").read_text(), "my_task.py", "exec")
