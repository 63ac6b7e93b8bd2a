"""Shims that make TRL 0.24 work on transformers 5.x. Kept in one place so they are easy to drop.

transformers 5 changed `_is_package_available` to always return a (bool, version) tuple, and TRL 0.24
stores that tuple as its "is X installed" flag. A non-empty tuple is truthy, so TRL believes every
optional package (mergekit, vllm, llm_blender, ...) is installed and `from trl import GRPOTrainer`
dies importing them. We make the probe answer a real bool, before and after TRL is imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys

_applied = False


class _Availability(tuple):
    """A (available, version) pair that is falsy when the package is missing."""

    __slots__ = ()

    def __new__(cls, available: bool, pkg_version: str | None = None) -> _Availability:
        return super().__new__(cls, (bool(available), pkg_version))

    def __bool__(self) -> bool:
        return self[0]


def _fix_transformers_probe() -> None:
    import transformers.utils.import_utils as import_utils

    original = import_utils._is_package_available
    if getattr(original, "_ring_patched", False):
        return

    def probe(pkg_name: str, return_version: bool = False):
        result = original(pkg_name, return_version=return_version)
        if isinstance(result, tuple):
            return _Availability(*result)
        return result

    probe._ring_patched = True  # type: ignore[attr-defined]
    import_utils._is_package_available = probe


def _fix_already_imported_trl() -> None:
    """If TRL was imported before us, its module-level flags hold truthy tuples: recompute them."""
    trl_import_utils = sys.modules.get("trl.import_utils")
    if trl_import_utils is None:
        return
    for attr in list(vars(trl_import_utils)):
        if attr.startswith("_") and attr.endswith("_available"):
            value = getattr(trl_import_utils, attr)
            if isinstance(value, tuple) and not isinstance(value, _Availability):
                name = attr[1 : -len("_available")]
                setattr(trl_import_utils, attr, importlib.util.find_spec(name) is not None)


def apply() -> None:
    """Apply every shim once. Cheap: imports only transformers' import utilities."""
    global _applied
    if _applied:
        return
    _fix_transformers_probe()
    _fix_already_imported_trl()
    _applied = True


def ensure_warnings_issued(model: object) -> None:
    """TRL 0.24's GRPOTrainer reads `model.warnings_issued`, which transformers 5 models no longer carry."""
    if not hasattr(model, "warnings_issued"):
        with contextlib.suppress(AttributeError):
            model.warnings_issued = {}  # type: ignore[attr-defined]
