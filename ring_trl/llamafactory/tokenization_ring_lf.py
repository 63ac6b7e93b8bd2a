"""Tokenizer hook copied next to a Ring checkpoint (as `tokenization_ring_lf.py`, named in the tokenizer's
`auto_map`), so that a plain `llamafactory-cli train|export` process knows the `ring_v2_sft` template.

LLaMA-Factory 0.9.5 has no plugin mechanism for templates, but it loads the tokenizer (with
`trust_remote_code: true`) before it looks the template up; transformers imports this module at that moment.
The class is the ordinary fast tokenizer; importing the module registers the template when ring_trl and
LLaMA-Factory are installed and is a silent no-op anywhere else (vLLM, plain transformers).
"""

from transformers import PreTrainedTokenizerFast

try:
    from ring_trl.llamafactory.templates import register_ring_templates

    register_ring_templates()
except ImportError:
    pass


class RingTokenizerFast(PreTrainedTokenizerFast):
    """Byte-level BPE Ring tokenizer; identical to PreTrainedTokenizerFast (the subclass only carries the hook)."""
