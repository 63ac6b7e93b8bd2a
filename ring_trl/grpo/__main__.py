"""`python -m ring_trl.grpo recipes/grpo/<name>.yaml [key=value ...]`: run an IcePop GRPO recipe."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from ring_trl.grpo.recipe import RecipeError, load_recipe


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ring_trl.grpo", description=__doc__)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/grpo/tiny-icepop.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (training fields or recipe keys)")
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
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from ring_trl.grpo.build import build_trainer
    from ring_trl.grpo.plot import write_metrics_plot

    trainer, paths = build_trainer(recipe)
    trainer.train()
    output_dir = Path(trainer.args.output_dir)
    _save_model_atomically(trainer, paths.model_dir)
    if trainer.accelerator.is_main_process:
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
