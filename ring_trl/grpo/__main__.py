"""`python -m ring_trl.grpo <recipe.yaml> [key=value ...]`: run an IcePop GRPO recipe.

Relative paths in the recipe file resolve against its folder; paths in key=value overrides against the current
directory. A pre-flight checks the recipe, model folder, dataset and rewards before the model loads. Checkpoints
go to output_dir/checkpoint-N every save_steps; SIGTERM saves one and stops (exit 143); `resume=auto` continues.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from ring_trl.runtime import run_cli, use_offline_defaults

PROG = "python -m ring_trl.grpo"
EXIT_TERMINATED = 128 + 15  # the shell's status for a process ended by SIGTERM


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/grpo/tiny-icepop.yaml")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides (training fields or recipe keys, e.g. resume=auto)"
    )
    parser.add_argument("--preflight", action="store_true", help="run the pre-flight checks only")
    return parser.parse_args(argv)


def _save_model_atomically(trainer, final_dir: Path) -> None:
    """Save to a sibling temp folder, then swap it in, so a crash never leaves a half-written model."""
    temp_dir = final_dir.with_name(final_dir.name + ".tmp")
    main_process = trainer.accelerator.is_main_process
    if main_process:
        shutil.rmtree(temp_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(temp_dir))  # every rank takes part (ZeRO-3 gathers), the main one writes
    trainer.accelerator.wait_for_everyone()
    if main_process:
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(temp_dir))
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(temp_dir, final_dir)


def main(argv: list[str] | None = None) -> int:
    """The CLI: a bad recipe, override or input is one line on stderr and exit status 2."""
    use_offline_defaults()
    return run_cli(_run, argv, prog=PROG)


def _run(argv: list[str] | None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ring_trl.grpo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from ring_trl.grpo.build import build_trainer
    from ring_trl.grpo.lifecycle import StopOnSignal, resume_checkpoint
    from ring_trl.grpo.plot import write_metrics_plot
    from ring_trl.grpo.preflight import PreflightError, run_preflight

    try:
        checked = run_preflight(recipe)
    except PreflightError as error:
        for problem in error.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    for note in checked.notes:
        print(f"preflight: {note}", file=sys.stderr)
    if args.preflight:
        print(f"preflight: {recipe.source}: ok")
        return 0
    output_dir = Path(checked.config.output_dir)
    checkpoint = resume_checkpoint(recipe.resume, output_dir)
    trainer, paths = build_trainer(recipe, checked)
    stop = StopOnSignal(trainer.accelerator)
    trainer.add_callback(stop)
    stop.install()
    try:
        if checkpoint is not None:
            print(f"resuming from {checkpoint}", file=sys.stderr)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    finally:
        stop.uninstall()
    main_process = trainer.accelerator.is_main_process
    if stop.stopped_at is not None:
        if main_process:
            saved = output_dir / f"checkpoint-{trainer.state.global_step}"
            again = " ".join([PROG, args.recipe, *args.overrides, "resume=auto"])
            print(
                f"stopped by SIGTERM after step {trainer.state.global_step}: checkpoint {saved}; "
                f"continue with `{again}`",
                file=sys.stderr,
            )
        return EXIT_TERMINATED
    _save_model_atomically(trainer, paths.model_dir)
    if main_process:
        # The per-step metrics as JSON too (save_strategy "no" would otherwise never write them).
        trainer.state.save_to_json(str(output_dir / "trainer_state.json"))
        write_metrics_plot(trainer.state.log_history, paths.plot)
        print(f"model:       {paths.model_dir}")
        print(f"tensorboard: {paths.tensorboard}  (tensorboard --logdir {paths.tensorboard})")
        print(f"plot:        {paths.plot}")
        print(f"output_dir:  {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
