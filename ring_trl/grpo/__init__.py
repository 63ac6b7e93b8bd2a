"""IcePop GRPO on TRL 0.24: config, trainer, rollout capture, rewards and the `python -m ring_trl.grpo` CLI.

Import the trainer from `ring_trl.grpo.trainer` and the config from `ring_trl.grpo.config`; this package
file stays light so `python -m ring_trl.grpo --help` does not import TRL.
"""

from ring_trl.grpo.vllm_compat import install_import_aliases as _install_import_aliases

# Before TRL's GRPO trainer is imported anywhere: TRL 0.24 imports a vLLM name that vLLM 0.32 renamed. No-op
# (and no vLLM import) where vLLM is not installed.
_install_import_aliases()
