"""IcePop GRPO on TRL 0.24: config, trainer, rollout capture, rewards and the `python -m ring_trl.grpo` CLI.

Import the trainer from `ring_trl.grpo.trainer` and the config from `ring_trl.grpo.config`; this package
file stays light so `python -m ring_trl.grpo --help` does not import TRL.
"""
