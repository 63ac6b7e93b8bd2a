"""Compare our BailingMoeV2 implementation with the published remote code, numerically (fp32, CPU, eager).

The published `configuration_bailing_moe_v2.py` / `modeling_bailing_moe_v2.py` are NOT part of this repository:
place them in a folder yourself (copy them out of a downloaded Ring-mini-2.0 checkpoint, or from `models/` of the
inclusionAI/Ring-V2 GitHub repository) and pass that folder. The two copies count MTP layers differently; the
script detects which convention the copy uses.
They were written for transformers 4.x; the few names transformers 5 removed are patched in at runtime here
(the files themselves are not modified).

    python bench/compare_published.py --published-dir /path/to/ring-mini-2.0-code
    python bench/compare_published.py --published-dir DIR --model-dir /tmp/verify/tiny --skip-large

What is compared, for every expert layout ("fused", "per_expert") and implementation ("auto", which is grouped_mm
where it runs, "sorted", "loop") of ours:
- logits of a random batch (no padding), without and with an all-ones attention mask, against the published
  inference path (`moe_infer`) and the published training path (boolean-mask loop, `model.train()`);
- the routing of one MoE layer (selected experts, their weights, the router logits);
- the MTP layer output (positions 0..T-2; the last position differs by design, see below);
for the tiny test model (built on the fly unless --model-dir is given) and for a larger random configuration with
random non-zero expert_bias and random norm weights. Exits 1 if any difference exceeds --tol.

MTP, last position: the published code feeds the MTP layer the embedding of token id 0 at the last position
(it rolls the input ids and fills 0), ours feeds a zero vector there. That position has no MTP label (it is
ignored by the MTP loss), and causal attention keeps it from affecting earlier positions; it is reported, not
checked.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

VARIANTS = (
    ("fused", "auto"),
    ("fused", "sorted"),
    ("fused", "loop"),
    ("per_expert", "sorted"),
    ("per_expert", "loop"),
)
PACKAGE = "_published_bailing_moe_v2"


# ----------------------------------------------------------------------------------------------------------------
# Runtime shims for the published code (transformers 4.x names that transformers 5 removed)
# ----------------------------------------------------------------------------------------------------------------


def _default_rope_parameters(config: Any, device: Any = None, **_: Any) -> tuple[torch.Tensor, float]:
    """The plain RoPE frequencies (transformers 4.x `"default"` rope type), honouring partial_rotary_factor."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (config.rope_theta**exponents), 1.0


def install_shims() -> list[str]:
    """Patch back what the published code imports but transformers 5 no longer has; return what was patched."""
    import transformers.utils
    import transformers.utils.import_utils as import_utils
    from transformers import modeling_rope_utils

    patched = []
    if not hasattr(import_utils, "is_torch_fx_available"):
        import_utils.is_torch_fx_available = lambda: False
        patched.append("transformers.utils.import_utils.is_torch_fx_available")
    if not hasattr(transformers.utils, "is_torch_fx_available"):
        transformers.utils.is_torch_fx_available = import_utils.is_torch_fx_available
    if "default" not in modeling_rope_utils.ROPE_INIT_FUNCTIONS:
        modeling_rope_utils.ROPE_INIT_FUNCTIONS["default"] = _default_rope_parameters
        patched.append('transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["default"]')
    return patched


def import_published(folder: Path) -> Any:
    """Import the published modeling module from `folder` as a package (it uses a relative config import)."""
    for name in ("configuration_bailing_moe_v2.py", "modeling_bailing_moe_v2.py"):
        if not (folder / name).is_file():
            raise SystemExit(f"{folder} has no {name}")
    spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(folder)]
    sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.modeling_bailing_moe_v2")


def published_layer_count_includes_mtp(module: Any) -> bool:
    """Whether this copy of the published code counts its MTP layers inside num_hidden_layers.

    The copies disagree: the Ring-V2 GitHub repository's builds `num_hidden_layers` layers, the last
    `num_nextn_predict_layers` of them MTP layers; the hub copies build the MTP layers after them. A meta-device
    model of two layers and one MTP layer tells which.
    """
    import torch

    fields = {
        "vocab_size": 8,
        "hidden_size": 8,
        "intermediate_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "moe_intermediate_size": 4,
        "num_nextn_predict_layers": 1,
        "first_k_dense_replace": 1,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 0,
    }
    with torch.device("meta"):
        model = module.BailingMoeV2Model(module.BailingMoeV2Config(**fields))
    return len(model.layers) == 2


def build_published(module: Any, config_dict: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Any:
    """A published BailingMoeV2ForCausalLM (eager attention, fp32) holding exactly `state_dict`."""
    config_dict = {k: v for k, v in config_dict.items() if k not in ("auto_map", "architectures")}
    mtp_layers = config_dict.get("num_nextn_predict_layers", 0)
    ours_inside = bool(config_dict.get("mtp_layers_in_num_hidden_layers"))
    theirs_inside = published_layer_count_includes_mtp(module)
    if ours_inside and not theirs_inside:
        config_dict["num_hidden_layers"] -= mtp_layers
    elif theirs_inside and not ours_inside:
        config_dict["num_hidden_layers"] += mtp_layers
    config = module.BailingMoeV2Config(**config_dict)
    config._attn_implementation = "eager"
    model = module.BailingMoeV2ForCausalLM(config).float()
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(
            f"published model does not take these weights: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# Models under test
# ----------------------------------------------------------------------------------------------------------------


def load_ours(model_dir: Path, layout: str, implementation: str) -> Any:
    from ring_trl.models.bailing_moe_v2 import BailingMoeV2ForCausalLM

    model = BailingMoeV2ForCausalLM.from_pretrained(
        model_dir,
        expert_layout=layout,
        expert_implementation=implementation,
        dtype=torch.float32,
        attn_implementation="eager",
    )
    return model.eval()


def build_large_random(folder: Path, seed: int) -> Path:
    """A larger random model (2 main layers: dense + MoE, 1 MTP layer) saved in the published weight layout."""
    from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM

    config = BailingMoeV2Config(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        num_experts=32,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
        moe_intermediate_size=32,
        num_shared_experts=1,
        first_k_dense_replace=1,
        partial_rotary_factor=0.5,
        use_qk_norm=True,
        num_nextn_predict_layers=1,
        routed_scaling_factor=2.5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=0,
        expert_layout="per_expert",
    )
    torch.manual_seed(seed)
    model = BailingMoeV2ForCausalLM(config).float()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("expert_bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif tensor.dim() == 1:  # RMSNorm weights
                tensor.copy_(1.0 + 0.3 * torch.randn_like(tensor))
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) / tensor.shape[-1] ** 0.5)
    model.save_pretrained(folder)
    return folder


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(file))
    return weights


# ----------------------------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------------------------


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def first_moe_layer(config: Any) -> int:
    return min(config.first_k_dense_replace, config.num_hidden_layers - 1)


class GateCapture:
    """Records the (indices, weights, logits) returned by one router."""

    def __init__(self, gate: torch.nn.Module) -> None:
        self.output: tuple[torch.Tensor, ...] | None = None
        self.handle = gate.register_forward_hook(self._hook)

    def _hook(self, _module: Any, _args: Any, output: tuple[torch.Tensor, ...]) -> None:
        self.output = tuple(t.detach().clone() for t in output)

    def remove(self) -> None:
        self.handle.remove()


def routing_diffs(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Compare expert sets (order-free) and the weights matched by expert id."""
    our_idx, our_w, our_logits = ours
    pub_idx, pub_w, pub_logits = theirs
    our_sorted, our_order = our_idx.sort(dim=-1)
    pub_sorted, pub_order = pub_idx.sort(dim=-1)
    mismatched = (our_sorted != pub_sorted).any(dim=-1).sum().item()
    return {
        "routing: tokens with a different expert set": float(mismatched),
        "routing: max |weight diff|": max_diff(our_w.gather(1, our_order), pub_w.gather(1, pub_order)),
        "routing: max |router logit diff|": max_diff(our_logits, pub_logits),
    }


@torch.no_grad()
def compare(ours: Any, published: Any, input_ids: torch.Tensor) -> dict[str, float]:
    results: dict[str, float] = {}
    mask = torch.ones_like(input_ids)
    layer = first_moe_layer(published.config)

    our_capture = GateCapture(ours.model.layers[layer].mlp.gate)
    pub_capture = GateCapture(published.model.layers[layer].mlp.gate)
    our_logits = ours(input_ids=input_ids, use_cache=False).logits
    published.eval()
    pub_out = published(input_ids=input_ids, use_cache=False)
    assert our_capture.output is not None and pub_capture.output is not None
    results.update(routing_diffs(our_capture.output, pub_capture.output))
    our_capture.remove()
    pub_capture.remove()

    results["logits, no mask (published inference path)"] = max_diff(our_logits, pub_out.logits)
    our_masked = ours(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    pub_masked = published(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    results["logits, all-ones mask (published inference path)"] = max_diff(our_masked, pub_masked)
    published.train()
    pub_train = published(input_ids=input_ids, use_cache=False).logits
    published.eval()
    results["logits, no mask (published training path)"] = max_diff(our_logits, pub_train)

    if pub_out.mtp_logits:
        our_mtp = ours.model(input_ids=input_ids, use_cache=False, run_mtp=True).mtp_hidden_states
        our_mtp_logits = ours.lm_head(our_mtp[0]).float()
        results["MTP logits, positions 0..T-2"] = max_diff(
            our_mtp_logits[:, :-1], pub_out.mtp_logits[0][:, :-1]
        )
        results["(info) MTP logits, last position"] = max_diff(
            our_mtp_logits[:, -1], pub_out.mtp_logits[0][:, -1]
        )
    results["(info) max |logit|"] = pub_out.logits.abs().max().item()
    return results


def run_case(
    name: str, model_dir: Path, module: Any, args: argparse.Namespace, tol: float
) -> tuple[float, list[str]]:
    config_dict = json.loads((model_dir / "config.json").read_text())
    published = build_published(module, config_dict, read_weights(model_dir))
    generator = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, config_dict["vocab_size"], (args.batch, args.seq_len), generator=generator)
    worst = 0.0
    failures = []
    for layout, implementation in VARIANTS:
        ours = load_ours(model_dir, layout, implementation)
        print(f"\n[{name}] ours: expert_layout={layout}, expert_implementation={implementation}")
        for label, value in compare(ours, published, input_ids).items():
            checked = not label.startswith("(info)")
            bad = checked and value > tol
            print(f"  {label:55s} {value:.3e}{'  <-- above tolerance' if bad else ''}")
            if checked:
                worst = max(worst, value)
            if bad:
                failures.append(f"{name} {layout}/{implementation}: {label} = {value:.3e}")
    return worst, failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--published-dir", type=Path, required=True, help="folder with the published config/modeling files"
    )
    parser.add_argument("--model-dir", type=Path, help="model folder to test (default: build the tiny model)")
    parser.add_argument("--skip-large", action="store_true", help="skip the larger random configuration")
    parser.add_argument("--tol", type=float, default=1e-5, help="max abs difference allowed (default 1e-5)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(min(2, torch.get_num_threads()))
    patched = install_shims()
    print("runtime shims for the published code:", ", ".join(patched) or "none needed")
    module = import_published(args.published_dir.resolve())

    worst = 0.0
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="compare_published_") as tmp:
        tmp_path = Path(tmp)
        if args.model_dir is not None:
            cases = [("model", args.model_dir)]
        else:
            from ring_trl.models.tiny import build_tiny_model

            cases = [("tiny", build_tiny_model(tmp_path / "tiny"))]
        if not args.skip_large:
            cases.append(("large-random", build_large_random(tmp_path / "large", args.seed)))
        for name, folder in cases:
            case_worst, case_failures = run_case(name, folder, module, args, args.tol)
            worst = max(worst, case_worst)
            failures.extend(case_failures)

    print(f"\nworst checked difference: {worst:.3e} (tolerance {args.tol:.0e})")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK: our implementation matches the published code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
