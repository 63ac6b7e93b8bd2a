"""Evaluate a checkpoint on local benchmark files with the kit's one answer checker (docs/eval.md)."""
