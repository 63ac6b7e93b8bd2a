"""A GRPO run that can be stopped and continued: checkpoint on SIGTERM, `resume: auto | <checkpoint>`.

Schedulers (Slurm, Kubernetes, spot instances) stop a job with SIGTERM and kill it a little later. The first
SIGTERM asks the trainer to finish the step it is in, write a checkpoint (model, optimizer, scheduler, RNG and
trainer state) and stop; a second one ends the process at once. `resume: auto` then continues from the newest
complete checkpoint in output_dir (a checkpoint is complete once its trainer_state.json is written, which
transformers does last), or starts fresh when there is none.
"""

from __future__ import annotations

import logging
import re
import signal
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ring_trl.grpo.recipe import RecipeError

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N folders under output_dir that hold a trainer state, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if (match := CHECKPOINT_NAME.match(path.name)) and (path / TRAINER_STATE).is_file()
    ]
    return [path for _, path in sorted(found)]


def resume_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to continue from: None (fresh start), the newest complete one for "auto", or the path."""
    if resume is None:
        return None
    if resume == "auto":
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            logger.info("resume: auto: no checkpoint in %s yet, starting from step 0", output_dir)
            return None
        return checkpoints[-1]
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise RecipeError(f"resume: {path} is not a complete checkpoint (no {TRAINER_STATE})")
    return path


class StopOnSignal(TrainerCallback):
    """Turns a SIGTERM into "save a checkpoint at the end of this step, then stop". With several processes,
    the ranks agree at every step end (one max-reduce of a flag), so a signal that reached only some of them
    cannot leave the others waiting in a collective."""

    def __init__(self, accelerator: Any | None = None) -> None:
        self.accelerator = accelerator
        self.received: int | None = None
        self.stopped_at: int | None = None
        self._previous: Any = None

    def install(self) -> StopOnSignal:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signum
        # A second SIGTERM is not asked twice: the default action ends the process.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        logger.warning("SIGTERM: finishing this step, saving a checkpoint, then stopping")

    def _any_rank_received(self) -> bool:
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return self.received is not None
        import torch

        flag = torch.tensor(float(self.received is not None), device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="max").item())

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
        if self._any_rank_received():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control
