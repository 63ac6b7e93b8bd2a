"""A tiny reward model trained by plain `llamafactory-cli train recipes/tiny-rm.yaml`, then used as a GRPO reward.

The reward model's scores are checked against LLaMA-Factory's own value-head model on LLaMA-Factory's own pair
tokens (same ids, same value at the last token), and a GRPO run mixes it with a Python reward.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from data_prep.config import BuildConfig, SourceConfig
from data_prep.errors import DataPrepError
from data_prep.pipeline import Build
from ring_trl.grpo.rewards.reward_model import RewardModelScorer, load_reward_model
from ring_trl.llamafactory.render import render_pairs_with_llamafactory
from ring_trl.runtime import UsageError
from tests.test_sft import llamafactory, logged_losses

REPO = Path(__file__).resolve().parents[1]
PAIRS = [json.loads(line) for line in (REPO / "data" / "ring_sample_pref.jsonl").read_text().splitlines()]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "lora-rm"
    llamafactory(
        "train", "tiny-rm", {"model_name_or_path": tiny_model_dir, "output_dir": out, "max_steps": 8}
    )
    return out


@pytest.fixture(scope="module")
def scorer(rm_dir: Path) -> RewardModelScorer:
    return load_reward_model(rm_dir).scorer


def test_tiny_rm_trains_and_ranks_chosen_above_rejected(rm_dir: Path, scorer: RewardModelScorer) -> None:
    losses = logged_losses(rm_dir)
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    assert (rm_dir / "value_head.safetensors").is_file() and (rm_dir / "adapter_config.json").is_file()
    chosen = scorer.score([[*p["prompt"], p["chosen"]] for p in PAIRS])
    rejected = scorer.score([[*p["prompt"], p["rejected"]] for p in PAIRS])
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(PAIRS)
    assert accuracy >= 0.8, (accuracy, chosen, rejected)


def test_scores_equal_llamafactory_value_head_on_its_own_tokens(
    rm_dir: Path, tiny_model_dir: Path, scorer: RewardModelScorer
) -> None:
    """Same token ids as LLaMA-Factory's pairwise processor, same value as its trained value-head model."""
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer

    args = {
        "model_name_or_path": str(tiny_model_dir),
        "adapter_name_or_path": str(rm_dir),
        "template": "bailing",
        "trust_remote_code": True,
        "finetuning_type": "lora",
        "stage": "rm",
    }
    model_args, _, finetuning_args, _ = get_infer_args(args)
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    value_model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False, add_valuehead=True)
    _, rendered = render_pairs_with_llamafactory(
        {**args, "dataset": "ring_sample_pref", "dataset_dir": str(REPO / "data"), "cutoff_len": 1024},
        max_rows=6,
    )
    for pair, row in zip(PAIRS, rendered, strict=False):
        for side, tokens in (("chosen", row.chosen.input_ids), ("rejected", row.rejected.input_ids)):
            conversation = [*pair["prompt"], pair[side]]
            assert scorer.token_ids(conversation) == tokens
            with torch.no_grad():
                _, _, values = value_model(input_ids=torch.tensor([tokens]), output_hidden_states=True)
            assert scorer.score([conversation])[0] == pytest.approx(values[0, -1].item(), abs=1e-4)


def test_reward_scores_only_the_answer_after_think(rm_dir: Path, scorer: RewardModelScorer) -> None:
    prompt = PAIRS[0]["prompt"]
    answer = "The answer is 26."
    expected = scorer.score([[*prompt, {"role": "assistant", "content": answer}]])[0]
    empty = scorer.score([[*prompt, {"role": "assistant", "content": ""}]])[0]
    reward = load_reward_model(rm_dir)
    completions = [
        [{"role": "assistant", "content": f"22 + 4 = 26.\n</think>\n\n{answer}"}],
        [{"role": "assistant", "content": f"completely different reasoning</think>\n\n{answer}"}],
        [{"role": "assistant", "content": "reasoning that never ends"}],
    ]
    values = reward([prompt] * 3, completions)
    assert values[0] == pytest.approx(expected, abs=1e-5) and values[1] == pytest.approx(expected, abs=1e-5)
    assert values[2] == pytest.approx(empty, abs=1e-5)
    assert load_reward_model(rm_dir, no_answer="skip")([prompt], completions[2:]) == [None]
    assert load_reward_model(rm_dir, no_answer=-1.0)([prompt], completions[2:]) == [-1.0]


def test_sequence_classification_reward_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The other kind of folder: a Hugging Face sequence classifier (num_labels 1) read with its own template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "seqcls")
    tokenizer.save_pretrained(tmp_path / "seqcls")
    scorer = load_reward_model(tmp_path / "seqcls", batch_size=2).scorer
    conversations = [[*p["prompt"], p["chosen"]] for p in PAIRS[:3]]
    scores = scorer.score(conversations)
    reference = LlamaForSequenceClassification.from_pretrained(tmp_path / "seqcls").eval()
    for conversation, score in zip(conversations, scores, strict=True):
        ids = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            assert score == pytest.approx(reference(input_ids=ids).logits[0, 0].item(), abs=1e-5)


def test_bad_reward_model_folders_are_one_line_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"reward model folder .*missing does not exist"):
        load_reward_model(tmp_path / "missing")
    with pytest.raises(UsageError, match="neither a LLaMA-Factory reward model"):
        load_reward_model(tiny_model_dir)  # a causal LM without a value head
    with pytest.raises(UsageError, match="unknown kwargs"):
        load_reward_model(tiny_model_dir, batch=4)
    with pytest.raises(UsageError, match="no_answer must be"):
        load_reward_model(tiny_model_dir, no_answer="zero")


def test_grpo_run_mixes_a_python_reward_with_the_reward_model(
    rm_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """recipes/grpo/examples/reward_model.yaml as written, pointed at the test's models."""
    recipe = REPO / "recipes" / "grpo" / "examples" / "reward_model.yaml"
    rewards = yaml.safe_load(recipe.read_text())["rewards"]
    assert [sorted(r) for r in rewards] == [["function", "weight"], ["kwargs", "model", "weight"]]
    rewards[1]["model"] = str(rm_dir)
    out = tmp_path / "grpo"
    result = subprocess.run(
        [
            sys.executable, "-m", "ring_trl.grpo", str(recipe), f"model_name_or_path={tiny_model_dir}",
            f"rewards={json.dumps(rewards)}", f"output_dir={out}", "max_steps=2", "save_samples=true",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [row for row in history if "reward" in row]
    assert len(steps) == 2
    name = f"rm_{rm_dir.name}"
    for row in steps:
        rm_mean, python_mean = row[f"rewards/{name}/mean"], row["rewards/math_answer/mean"]
        assert math.isfinite(rm_mean) and rm_mean != 0.0
        assert row[f"rewards/{name}/failures"] == 0
        assert row["reward"] == pytest.approx(1.0 * python_mean + 0.5 * rm_mean, abs=1e-4)

    # save_samples: every rollout with its rewards, the input of build-pref --from-samples
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 8 and {s["step"] for s in samples} == {0, 1}
    for sample in samples:
        assert set(sample["rewards"]) == {"math_answer", name} and sample["answer"]
        expected = 1.0 * sample["rewards"]["math_answer"] + 0.5 * sample["rewards"][name]
        assert sample["reward"] == pytest.approx(expected, abs=1e-5)
    by_step = [sum(s["rewards"][name] for s in samples if s["step"] == step) / 8 for step in (0, 1)]
    assert by_step == pytest.approx([row[f"rewards/{name}/mean"] for row in steps], abs=1e-4)

    config = BuildConfig(
        inputs=[SourceConfig(str(out / "samples.jsonl"), "samples")], output_dir=str(tmp_path / "pairs"),
        dataset_name="onpolicy", cutoff_len=0, workers=0, progress=False,
    )  # fmt: skip
    config.validate("pref")
    groups = len({(s["id"], s["step"]) for s in samples})  # a prompt's rollouts of one step
    try:
        read = Build(config, "pref").run().report["rows_read"]  # pairs + prompts without a pair
    except DataPrepError as error:  # a random policy may give no pair at all: every group says why
        read = int(re.search(rf"all (\d+) rows were rejected \(no_pair {groups}\)", str(error)).group(1))
    assert read == groups
