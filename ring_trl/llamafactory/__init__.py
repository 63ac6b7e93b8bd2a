"""LLaMA-Factory integration: the Ring chat templates LLaMA-Factory 0.9.5 lacks, and the hook that makes them
visible to a plain `llamafactory-cli` process."""

from ring_trl.llamafactory.templates import CHAT_FORMAT_TO_LF_TEMPLATE, register_ring_templates

__all__ = ["CHAT_FORMAT_TO_LF_TEMPLATE", "register_ring_templates"]
