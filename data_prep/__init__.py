"""data_prep: Long-CoT SFT datasets and RLVR prompt sets for Ring 2.0, from the files people download."""

__version__ = "0.1.0"
