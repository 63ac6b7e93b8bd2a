"""Talk to a Ring model folder: `python -m ring_trl.chat MODEL [--prompt TEXT]` (or `make chat MODEL=<folder>`).

The folder's own chat template renders the conversation, tokens stream as they are generated, and the reasoning
(`<think>...</think>`) is shown apart from the answer. Works on a CPU with the tiny model.
"""
