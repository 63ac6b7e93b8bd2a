"""IcePopGRPOTrainer: TRL 0.24's GRPOTrainer with IcePop token masking.

What changes with `icepop=True`:
- rollouts record the sampler's per-token log-probs (vLLM returns them; the HF `generate` path records them
  with `SampledTokenLogprobRecorder`), kept in the batch as `sampling_per_token_logps`;
- once per rollout batch, k = exp(logp_train(theta_old) - logp_infer) is turned into IcePop weights;
- the loss multiplies the clipped surrogate of each token by its weight. The KL term is not masked, and masked
  tokens stay in the normaliser of the chosen `loss_type`.
With `icepop=False` the loss and rewards are GRPOTrainer's unchanged. HF-generate rollouts take the same
explicit sampling path with IcePop on and off (`sampling.py`: nothing filled in from the checkpoint's
generation_config.json or transformers' defaults), so the same seed samples the same tokens either way.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Any

import torch
import transformers
from accelerate.utils import is_peft_model
from transformers import AutoModelForCausalLM, Trainer
from trl import GRPOTrainer
from trl.data_utils import maybe_apply_chat_template
from trl.models import prepare_deepspeed, prepare_fsdp, unwrap_model_for_generation
from trl.trainer.callbacks import SyncRefModelCallback
from trl.trainer.utils import disable_dropout_in_model, nanmax, nanmin, pad

from ring_trl.compat import ensure_warnings_issued
from ring_trl.grpo.config import IcePopGRPOConfig
from ring_trl.grpo.reward_spread import RewardSpreadWatch
from ring_trl.grpo.rewards.guard import GuardedReward
from ring_trl.grpo.rollout import SampledTokenLogprobRecorder, completion_mask_after_eos, rollout_engine
from ring_trl.grpo.sampling import (
    checkpoint_generation_defaults_hidden,
    checkpoint_sampling_overrides,
    rollout_generation_config,
    sampling_processors,
)
from ring_trl.grpo.vllm_compat import patch_trl_grpo_module
from ring_trl.grpo.vllm_sync import published_names_for_vllm, sync_colocated_engine
from ring_trl.icepop import icepop_weights

logger = logging.getLogger(__name__)

SAMPLING_LOGPS_KEY = "sampling_per_token_logps"
WEIGHTS_KEY = "icepop_weights"

patch_trl_grpo_module()  # vLLM installed (.venv-vllm): TRL's colocate/server code runs on vLLM 0.32 (vllm_compat.py)


def _needs_own_reference_model(model: Any, args: IcePopGRPOConfig, peft_config: Any) -> bool:
    """A KL reference is needed (beta != 0, no PEFT adapter to switch off) and TRL cannot build it."""
    if args.beta == 0.0 or peft_config is not None or isinstance(model, str) or is_peft_model(model):
        return False
    architectures = getattr(model.config, "architectures", None) or []
    return not architectures or not hasattr(transformers, architectures[0])


class IcePopGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose policy-gradient term is masked/weighted by IcePop (see module docstring)."""

    sample_log: Any = None  # a ring_trl.grpo.samples.SampleLog when the recipe says save_samples: true

    def __init__(self, model: Any, reward_funcs: Any, args: IcePopGRPOConfig | None = None, **kwargs: Any):
        if args is None:
            # As GRPOTrainer does: a default config named after the model.
            model_name = model if isinstance(model, str) else model.config._name_or_path
            args = IcePopGRPOConfig(f"{model_name.split('/')[-1]}-GRPO")
        if not isinstance(args, IcePopGRPOConfig):
            raise TypeError(f"args must be an IcePopGRPOConfig, got {type(args).__name__}")
        if not isinstance(model, str):
            ensure_warnings_issued(model)
        own_reference = _needs_own_reference_model(model, args, kwargs.get("peft_config"))
        kl_beta, sync_reference = args.beta, args.sync_ref_model
        if own_reference:
            # TRL would build the reference with getattr(transformers, arch), which remote-code models lack.
            args.beta, args.sync_ref_model = 0.0, False
        try:
            super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        finally:
            args.beta, args.sync_ref_model = kl_beta, sync_reference
        if own_reference:
            self.beta = kl_beta
            self.ref_model = self._load_reference_model()
            if sync_reference:
                self.add_callback(
                    SyncRefModelCallback(ref_model=self.ref_model, accelerator=self.accelerator)
                )
        self._pending_sampling_logps: list[list[float]] | None = None
        if not self.use_vllm:
            self._rollout_generation_config = rollout_generation_config(
                self.generation_config, args.generation_kwargs
            )
            ignored = checkpoint_sampling_overrides(self.accelerator.unwrap_model(self.model))
            if ignored:
                logger.info(
                    "rollouts ignore the checkpoint's generation_config.json sampling fields %s and sample "
                    "with the recipe's settings %s",
                    ignored,
                    args.sampling,
                )
        self.add_callback(RewardSpreadWatch())

    def _load_reference_model(self) -> torch.nn.Module:
        """The frozen KL reference for remote-code models, loaded and wrapped the way TRL wraps its own."""
        policy = self.accelerator.unwrap_model(self.model)
        reference = AutoModelForCausalLM.from_pretrained(
            policy.config._name_or_path, trust_remote_code=True, dtype=policy.dtype
        )
        if self.args.disable_dropout:
            disable_dropout_in_model(reference)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(reference, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(reference, self.accelerator)
        return self.accelerator.prepare_model(reference, evaluation_mode=True)

    # ----------------------------------------------------------------------------------------------- rollouts
    def _move_model_to_vllm(self) -> None:
        """Colocated engine: one bulk reload (vllm_sync.py). Server: TRL's per-tensor push under the published
        per-expert names, which `python -m ring_trl.grpo.vllm_serve` reloads in bulk."""
        if self.vllm_mode == "colocate":
            sync_colocated_engine(self)
            return
        with published_names_for_vllm(vllm_client=getattr(self, "vllm_client", None)):
            super()._move_model_to_vllm()

    def _generate_single_turn(self, prompts: list, images: list | None):
        if self.use_vllm or self.args.use_transformers_paged:
            return super()._generate_single_turn(prompts, images)
        if images is not None:
            raise NotImplementedError("HF-generate rollouts here are text-only; use vLLM for images")
        return self._generate_with_transformers(prompts)

    def _generate_with_transformers(self, prompts: list):
        """HF `generate` with the explicit sampling settings (IcePop on and off alike), recording the
        sampler's log-probs when IcePop is on."""
        prompts_text = [
            maybe_apply_chat_template({"prompt": p}, self.processing_class)["prompt"] for p in prompts
        ]
        encoded = self.processing_class(
            text=prompts_text,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            max_length=self.max_prompt_length,
            truncation=True,
            add_special_tokens=False,
        )
        encoded = Trainer._prepare_inputs(self, encoded)
        recorder = SampledTokenLogprobRecorder() if self.args.icepop else None
        if self.is_fsdp_enabled:
            from torch.distributed.fsdp import FullyShardedDataParallel

            summon = FullyShardedDataParallel.summon_full_params(self.model_wrapped, recurse=False)
        else:
            summon = nullcontext()
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
            ) as unwrapped_model,
            torch.no_grad(),
            summon,
            rollout_engine(unwrapped_model, self.args.rollout_dtype, self.args.rollout_attn_implementation),
            checkpoint_generation_defaults_hidden(unwrapped_model),
        ):
            sequences = unwrapped_model.generate(
                **encoded,
                generation_config=self._rollout_generation_config,
                logits_processor=sampling_processors(self.args.sampling, recorder),
            )
        prompt_length = encoded["input_ids"].size(1)
        completion_ids = sequences[:, prompt_length:]
        completion_mask = completion_mask_after_eos(completion_ids, self.eos_token_id).bool()
        prompt_mask = encoded["attention_mask"].bool()
        prompt_ids_list = [
            row[keep].tolist() for row, keep in zip(encoded["input_ids"], prompt_mask, strict=True)
        ]
        completion_ids_list = [
            row[keep].tolist() for row, keep in zip(completion_ids, completion_mask, strict=True)
        ]
        logps_list = None
        if recorder is not None:
            sampling_logps = recorder.collect(sequences, prompt_length)
            logps_list = [
                row[keep].tolist() for row, keep in zip(sampling_logps, completion_mask, strict=True)
            ]
        return prompt_ids_list, completion_ids_list, logps_list, {}

    def _generate(self, prompts: list, images: list | None):
        prompt_ids, completion_ids, total_tokens, logprobs, forward_kwargs = super()._generate(
            prompts, images
        )
        if self.args.icepop and logprobs is not None:
            # `trl vllm-serve` sends a NaN log-prob as JSON null: a broken token, masked by IcePop and counted
            # in icepop/broken_tokens, instead of a crash in torch.tensor.
            logprobs = [[math.nan if value is None else value for value in row] for row in logprobs]
        self._pending_sampling_logps = logprobs
        return prompt_ids, completion_ids, total_tokens, logprobs, forward_kwargs

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        sampling_logps, self._pending_sampling_logps = self._pending_sampling_logps, None
        if not self.args.icepop:
            return output
        if sampling_logps is None:
            raise RuntimeError("IcePop: the rollout returned no sampling log-probs (paged generation?)")
        device = output["completion_ids"].device
        rows = [torch.tensor(row, dtype=torch.float32, device=device) for row in sampling_logps]
        padded = pad(rows, padding_value=0.0, padding_side="right")
        width = output["completion_ids"].size(1)
        if padded.size(1) < width:
            padded = torch.nn.functional.pad(padded, (0, width - padded.size(1)))
        output[SAMPLING_LOGPS_KEY] = padded[:, :width]
        old_logps = output.get("old_per_token_logps")
        if old_logps is not None:
            # theta_old log-probs already exist (vLLM or off-policy steps): weigh the whole rollout batch now.
            output[WEIGHTS_KEY] = self._icepop_weights(old_logps, output, entropies=None)
        return output

    # -------------------------------------------------------------------------------------------------- loss
    def _icepop_weights(
        self, train_logps: torch.Tensor, inputs: dict[str, Any], entropies: torch.Tensor | None
    ) -> torch.Tensor:
        weights, metrics = icepop_weights(
            train_logps.detach(),
            inputs[SAMPLING_LOGPS_KEY],
            inputs["completion_mask"],
            alpha=self.args.icepop_alpha,
            beta=self.args.icepop_beta,
            entropies=entropies,
        )
        mode = "train" if self.model.training else "eval"
        names = list(metrics)
        # One gather and one host transfer for all metrics, not one per metric (each is a device sync).
        local = torch.tensor([metrics[name] for name in names], device=self.accelerator.device)
        gathered = self.accelerator.gather(local).view(-1, len(names))
        reduced = []
        for column, name in enumerate(names):
            values = gathered[:, column]
            if name.endswith("_min"):
                reduced.append(nanmin(values))
            elif name.endswith("_max"):
                reduced.append(nanmax(values))
            elif name in ("masked_tokens", "broken_tokens", "tokens"):
                reduced.append(values.nansum())
            else:
                reduced.append(values.nanmean())
        for name, value in zip(names, torch.stack(reduced).tolist(), strict=True):
            if not math.isnan(value):
                self._metrics[mode][f"icepop/{name}"].append(value)
        return weights

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        if not self.args.icepop:
            return super()._compute_loss(model, inputs)
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        per_token_logps, entropies = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"),
            pixel_attention_mask=inputs.get("pixel_attention_mask"),
            image_sizes=inputs.get("image_sizes"),
            token_type_ids=inputs.get("token_type_ids"),
        )
        old_logps = inputs.get("old_per_token_logps")
        if old_logps is None:
            # No update happened since this rollout, so the current pass is theta_old (TRL relies on the same).
            old_logps = per_token_logps.detach()
        if WEIGHTS_KEY not in inputs:
            # Computed once per rollout batch: the buffered batch keeps it for later iterations (num_iterations).
            inputs[WEIGHTS_KEY] = self._icepop_weights(old_logps, inputs, entropies=entropies)
        weights = inputs[WEIGHTS_KEY]

        log_ratio = per_token_logps - old_logps
        if self.importance_sampling_level == "sequence":
            log_ratio = (log_ratio * completion_mask).sum(-1, keepdim=True) / completion_mask.sum(
                -1, keepdim=True
            ).clamp(min=1.0)
        elif self.importance_sampling_level != "token":
            raise ValueError(f"Unknown importance_sampling_level {self.importance_sampling_level!r}")
        ratio = torch.exp(log_ratio)
        clipped_ratio = torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)
        if self.args.delta is not None:
            ratio = torch.clamp(ratio, max=self.args.delta)
        advantages = inputs["advantages"].unsqueeze(1)
        surrogate = torch.min(ratio * advantages, clipped_ratio * advantages)
        per_token_loss = -surrogate * weights
        if self.top_entropy_quantile < 1.0:
            entropy_mask = self.get_high_entropy_mask(
                entropies, completion_mask, 1 - self.top_entropy_quantile
            )
            per_token_loss = per_token_loss * entropy_mask
        per_token_kl = None
        if self.beta != 0.0:
            ref_logps = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref_logps - per_token_logps) - (ref_logps - per_token_logps) - 1
            per_token_loss = per_token_loss + self.beta * per_token_kl
        loss = self._normalise(per_token_loss, completion_mask, inputs)
        self._log_policy_metrics(ratio, advantages, entropies, per_token_kl, completion_mask)
        return loss

    def _normalise(
        self, per_token_loss: torch.Tensor, mask: torch.Tensor, inputs: dict[str, Any]
    ) -> torch.Tensor:
        """Reduce per-token losses as `loss_type` says; masked IcePop tokens count in every denominator."""
        masked_loss = per_token_loss * mask
        if self.loss_type == "grpo":
            loss = (masked_loss.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        elif self.loss_type == "bnpo":
            loss = masked_loss.sum() / mask.sum().clamp(min=1.0)
        elif self.loss_type == "dr_grpo":
            loss = masked_loss.sum() / (per_token_loss.size(0) * self.max_completion_length)
        elif self.loss_type == "dapo":
            return masked_loss.sum() / (inputs["num_items_in_batch"] / self.accelerator.num_processes)
        else:
            raise ValueError(f"Unknown loss_type {self.loss_type!r}")
        return loss / self.current_gradient_accumulation_steps

    def _log_policy_metrics(
        self,
        ratio: torch.Tensor,
        advantages: torch.Tensor,
        entropies: torch.Tensor,
        per_token_kl: torch.Tensor | None,
        mask: torch.Tensor,
    ) -> None:
        """The same entropy / KL / clip metrics GRPOTrainer logs, so runs stay comparable."""
        mode = "train" if self.model.training else "eval"
        token_count = mask.sum().clamp(min=1.0)

        def batch_mean(values: torch.Tensor) -> torch.Tensor:
            if values.size(1) == 1:
                return values.mean()
            return (values * mask).sum() / token_count

        if per_token_kl is not None:
            self._metrics[mode]["kl"].append(
                self.accelerator.gather(batch_mean(per_token_kl)).nanmean().item()
            )
        self._metrics[mode]["entropy"].append(self.accelerator.gather(batch_mean(entropies)).nanmean().item())
        low = ((ratio < 1 - self.epsilon_low) & (advantages < 0)).float()
        high = ((ratio > 1 + self.epsilon_high) & (advantages > 0)).float()
        low_clip = self.accelerator.gather(batch_mean(low))
        high_clip = self.accelerator.gather(batch_mean(high))
        region = self.accelerator.gather(batch_mean(torch.maximum(low, high)))
        self._metrics[mode]["clip_ratio/low_mean"].append(low_clip.nanmean().item())
        self._metrics[mode]["clip_ratio/low_min"].append(nanmin(low_clip).item())
        self._metrics[mode]["clip_ratio/high_mean"].append(high_clip.nanmean().item())
        self._metrics[mode]["clip_ratio/high_max"].append(nanmax(high_clip).item())
        self._metrics[mode]["clip_ratio/region_mean"].append(region.nanmean().item())

    # ----------------------------------------------------------------------------------------------- rewards
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        if (
            self.sample_log is not None and mode == "train"
        ):  # recipe `save_samples: true` (ring_trl/grpo/samples.py)
            start = self.accelerator.process_index * len(prompts)  # the rows are gathered from every process
            local = rewards_per_func[start : start + len(prompts)].tolist()
            self.sample_log.write(self.state.global_step, inputs, prompts, completions, local)
        total = 0
        for reward_func, name in zip(self.reward_funcs, self.reward_func_names, strict=True):
            if isinstance(reward_func, GuardedReward):
                failures = reward_func.take_failure_count()
                total += failures
                self._metrics[mode][f"rewards/{name}/failures"].append(float(failures))
        self._metrics[mode]["rewards/failures"].append(float(total))
        return rewards_per_func
