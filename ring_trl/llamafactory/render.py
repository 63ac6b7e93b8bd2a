"""What LLaMA-Factory will train on for a recipe, through LLaMA-Factory's own data pipeline.

`python -m ring_trl.llamafactory.render recipes/<name>.yaml [key=value ...] [--rows N]` prints, per row, the text
the model sees and the parts that carry loss, so a chat-format mistake is visible before any GPU time is spent.
The recipe passes the SFT pre-flight first (a missing model is one line, exit 2); LLaMA-Factory's logs are
silenced, so the rows are all it prints. For a preference recipe (stage dpo or rm) it prints both sides of each pair. The same functions back the
chat-format tests (tests/test_chat_format.py, tests/test_pref_chat_format.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from ring_trl.llamafactory.preflight import load_recipe, preflight_problems
from ring_trl.runtime import UsageError, run_cli, use_offline_defaults

IGNORE_INDEX = -100


# LLaMA-Factory stages whose data are pairs; their datasets are built by get_dataset(stage="rm").
PAIR_STAGES = ("dpo", "rm")


@dataclass
class RenderedRow:
    input_ids: list[int]
    labels: list[int]


@dataclass
class RenderedPair:
    chosen: RenderedRow
    rejected: RenderedRow


def render_with_llamafactory(
    recipe_args: dict[str, Any], max_rows: int | None = None
) -> tuple[Any, list[RenderedRow]]:
    """Tokenize a recipe's dataset exactly as `llamafactory-cli train` would; returns (tokenizer, rows).

    Runs the same calls as LLaMA-Factory's run_sft up to the dataset (load_tokenizer, template lookup, get_dataset);
    no model is loaded. Output/caching arguments are redirected to a temporary folder.
    """
    tokenizer, dataset = _llamafactory_dataset(recipe_args, "sft", max_rows)
    return tokenizer, [RenderedRow(list(r["input_ids"]), list(r["labels"])) for r in dataset]


def render_pairs_with_llamafactory(
    recipe_args: dict[str, Any], max_rows: int | None = None
) -> tuple[Any, list[RenderedPair]]:
    """The pairs a dpo / rm recipe trains on, as LLaMA-Factory's pairwise processor builds them."""
    tokenizer, dataset = _llamafactory_dataset(recipe_args, "rm", max_rows)
    pairs = [
        RenderedPair(
            RenderedRow(list(r["chosen_input_ids"]), list(r["chosen_labels"])),
            RenderedRow(list(r["rejected_input_ids"]), list(r["rejected_labels"])),
        )
        for r in dataset
    ]
    return tokenizer, pairs


def _llamafactory_dataset(recipe_args: dict[str, Any], stage: str, max_rows: int | None) -> tuple[Any, Any]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="ring-render-") as scratch:
        args = dict(recipe_args)
        for key in (
            "deepspeed",
            "quantization_bit",
            "quantization_method",
            "quantization_type",
            "double_quantization",
        ):
            args.pop(key, None)  # irrelevant to tokenization, and they need a launcher or a GPU to parse
        args.update(
            output_dir=os.path.join(scratch, "out"),
            overwrite_cache=True,
            report_to="none",
            preprocessing_num_workers=None,
            do_train=True,
            stage=stage,
        )
        if args.get("bf16") or args.get("fp16"):
            args["use_cpu"] = True
        if max_rows is not None:
            args["max_samples"] = max_rows
        model_args, data_args, training_args, _, _ = get_train_args(args)
        tokenizer_module = load_tokenizer(model_args)
        tokenizer = tokenizer_module["tokenizer"]
        template = get_template_and_fix_tokenizer(tokenizer, data_args)
        dataset = get_dataset(template, model_args, data_args, training_args, stage=stage, **tokenizer_module)
        rows = list(dataset["train_dataset"])
    return tokenizer, rows


def trained_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive positions that carry loss."""
    spans: list[tuple[int, int]] = []
    start = None
    for index, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = index
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, index))
            start = None
    return spans


def _quiet_llamafactory() -> None:
    """Only the rendered rows on the screen: LLaMA-Factory's and transformers' INFO logs and progress bars off."""
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")  # read when llamafactory is first imported
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    use_offline_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m ring_trl.llamafactory.render", description=__doc__.splitlines()[0]
    )
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="key=value, as for llamafactory-cli")
    parser.add_argument("--rows", type=int, default=2)
    options = parser.parse_args(argv)
    problems = preflight_problems(options.recipe, options.overrides, command="train")
    if problems:
        raise UsageError("; ".join(problems))
    recipe = load_recipe(options.recipe, options.overrides)
    _quiet_llamafactory()
    with contextlib.redirect_stdout(io.StringIO()):  # LLaMA-Factory prints its first "training example"
        if recipe.args.get("stage") in PAIR_STAGES:
            tokenizer, pairs = render_pairs_with_llamafactory(recipe.args, max_rows=options.rows)
        else:
            tokenizer, rows = render_with_llamafactory(recipe.args, max_rows=options.rows)
    if recipe.args.get("stage") in PAIR_STAGES:
        for number, pair in enumerate(pairs):
            _print_row(tokenizer, f"row {number} chosen", pair.chosen)
            _print_row(tokenizer, f"row {number} rejected", pair.rejected)
        return 0
    for number, row in enumerate(rows):
        _print_row(tokenizer, f"row {number}", row)
    return 0


def _print_row(tokenizer: Any, title: str, row: RenderedRow) -> None:
    print(f"===== {title}: {len(row.input_ids)} tokens")
    print(tokenizer.decode(row.input_ids, skip_special_tokens=False))
    for start, end in trained_spans(row.labels):
        print(
            f"----- trained [{start}:{end}]: {tokenizer.decode(row.labels[start:end], skip_special_tokens=False)!r}"
        )


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="render"))
