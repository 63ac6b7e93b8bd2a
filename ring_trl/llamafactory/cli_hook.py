"""Makes `llamafactory-cli train|export <recipe>` in this kit's .venv the same as `make sft` / `make export`.

scripts/setup_env.sh writes a one-line `.pth` file into .venv's site-packages (`python -m
ring_trl.llamafactory.cli_hook install`). Python runs that line at every start-up of the environment's interpreter;
it only compares the name of `sys.argv[0]` with `llamafactory-cli` / `lmf`, so every other process pays one string
comparison and imports nothing. In a llamafactory-cli process it imports this module, which sets the kit's offline
defaults and registers an import hook. When the CLI script then imports `llamafactory.cli` (start-up is complete by
then), the SFT pre-flight runs on the recipe and its `key=value` overrides: each problem is printed as one line and
the process exits 2, before LLaMA-Factory parses its arguments, loads a model or touches the network.

`RING_SKIP_PREFLIGHT=1` skips the check (the offline defaults still apply). torchrun workers that LLaMA-Factory
starts run `llamafactory/launcher.py`, not the CLI: they inherit the environment and are not checked again.
"""

from __future__ import annotations

import argparse
import importlib.abc
import os
import sys
import sysconfig
from pathlib import Path

from ring_trl.runtime import use_offline_defaults

CLI_NAMES = ("llamafactory-cli", "lmf")
CHECKED_COMMANDS = ("train", "export")
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
SKIP_ENV = "RING_SKIP_PREFLIGHT"
PTH_NAME = "ring_recipes_llamafactory_preflight.pth"
# A CPU-only torch can only ever give DeepSpeed the CPU accelerator; saying so spares every process DeepSpeed's
# "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it." warning.
CPU_ONLY_LINE = 'import os; os.environ.setdefault("DS_ACCELERATOR", "cpu")'
HOOK_LINE = (
    f"import os, sys; os.path.basename((sys.argv[:1] or [''])[0]) in {CLI_NAMES!r} "
    "and __import__('ring_trl.llamafactory.cli_hook').llamafactory.cli_hook.arm()"
)


def preflight_argv(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """(command, recipe, overrides) when argv is `llamafactory-cli train|export <recipe> [key=value ...]`."""
    if len(argv) < 3 or argv[1] not in CHECKED_COMMANDS or not argv[2].endswith(RECIPE_SUFFIXES):
        return None
    return argv[1], argv[2], argv[3:]


def run_preflight(argv: list[str]) -> None:
    """Exit 2 with one line per problem when the recipe in argv cannot start; return when it can (or no recipe)."""
    parsed = preflight_argv(argv)
    if parsed is None or os.environ.get(SKIP_ENV, "0").lower() in {"1", "true", "yes"}:
        return
    command, recipe, overrides = parsed
    from ring_trl.llamafactory.preflight import preflight_problems

    try:
        problems = preflight_problems(recipe, overrides, command=command)
    except Exception as error:  # a bug in the check must never stop a run the user could otherwise start
        print(
            f"preflight: skipped, the check itself failed ({type(error).__name__}: {error}); "
            f"{SKIP_ENV}=1 silences this",
            file=sys.stderr,
        )
        return
    if problems:
        for problem in problems:
            print(f"preflight: {problem}", file=sys.stderr)
        raise SystemExit(2)


class _PreflightBeforeLlamaFactory(importlib.abc.MetaPathFinder):
    """Runs the pre-flight when the CLI script imports `llamafactory.cli`, then steps aside for the real import."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == "llamafactory.cli":
            disarm()
            run_preflight(sys.argv)
        return None


def arm() -> None:
    """Called from the .pth line in llamafactory-cli processes only (idempotent)."""
    use_offline_defaults()
    if not any(isinstance(finder, _PreflightBeforeLlamaFactory) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PreflightBeforeLlamaFactory())


def disarm() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PreflightBeforeLlamaFactory)]


def pth_text(cpu_only: bool) -> str:
    """The .pth file: the CPU line first, so it is in place before the hook line imports anything."""
    lines = ["# written by scripts/setup_env.sh (python -m ring_trl.llamafactory.cli_hook install)"]
    if cpu_only:
        lines += [
            "# CPU-only torch: DeepSpeed's accelerator is the CPU (no detection warning)",
            CPU_ONLY_LINE,
        ]
    lines += ["# llamafactory-cli train|export <recipe> runs the kit's pre-flight first", HOOK_LINE]
    return "\n".join(lines) + "\n"


def install(site_dir: Path, cpu_only: bool) -> Path:
    """Write (or refresh) the .pth file; writing the same content again changes nothing."""
    target = site_dir / PTH_NAME
    text = pth_text(cpu_only)
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        tmp = target.with_name(f".{PTH_NAME}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ring_trl.llamafactory.cli_hook", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=["install"])
    parser.add_argument("--site-dir", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--cpu-only", action="store_true", help="torch has no CUDA: tell DeepSpeed so")
    options = parser.parse_args(argv)
    print(f"installed {install(options.site_dir, options.cpu_only)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
