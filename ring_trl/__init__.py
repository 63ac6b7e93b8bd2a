"""ring_trl: the Ring 2.0 (BailingMoeV2) model for the pinned stack, and IcePop GRPO on top of TRL."""

from ring_trl import compat as _compat

_compat.apply()

__version__ = "0.1.0"
