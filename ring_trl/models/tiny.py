"""Build a tiny random Ring 2.0 model + tokenizer for tests and demos (seconds, a few MB, fully offline).

Every architectural feature of Ring-mini-2.0 is present at toy size: a dense first layer, group-limited MoE
layers with a shared expert, qk-norm, partial rotary 0.5, one MTP layer. The folder uses our model code through
`auto_map` (like a prepared checkpoint) and stores weights in the published per-expert key layout.

    python -m ring_trl.models.tiny --output models/ring-tiny
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM
from ring_trl.models.files import MODEL_CODE_FILES, auto_map_for, copy_model_code, write_folder_atomically

CHAT_TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "chat_templates" / "ring_mini_2_0.jinja"
SEED = 1234
BPE_VOCAB_SIZE = 3000

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
ROLE_END_TOKEN = "<|role_end|>"
# Control tokens of the Ring/Ling tokenizer; special ones are stripped by skip_special_tokens.
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, "<|mask|>", "<|role_start|>", ROLE_END_TOKEN, "<role>", "</role>"]
# Markup the model must write and parsers must see after decoding: added, not special.
ADDED_TOKENS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]


COMMON_WORDS = (
    "first second third then so therefore because check verify compute solve answer result step total "
    "integer prime even odd square root fraction ratio percent triangle circle area length probability "
    "let we have find show that wait hmm actually recall note since hence thus final box number numbers "
    "question problem reasoning think carefully again correct wrong value values expression function "
    "the a an of to in is are was were be been being and or not no yes it its this these those there "
    "what which who whom whose when where why how all any both each few more most other some such only "
    "own same than too very can will just should now also into over under between after before during "
    "about against through above below up down out on off again further once here every many much "
    "make makes made take takes took give gives gave get gets got know knows knew see sees saw look "
    "looks use uses used try tries tried need needs want wants seem seems keep keeps start starts "
    "write writes wrote read reads say says said tell tells told ask asks asked work works worked "
    "add adds added subtract multiply divide divided multiplied equal equals equation equations "
    "sum sums difference product quotient remainder factor factors multiple multiples divisor digit "
    "digits decimal decimals percentage average mean median mode range variable variables constant "
    "coefficient polynomial quadratic linear cubic degree degrees angle angles radius diameter perimeter "
    "volume surface rectangle square cube sphere cylinder cone hypotenuse side sides vertex vertices edge "
    "edges graph graphs point points line lines slope intercept coordinate coordinates axis plane "
    "sequence series arithmetic geometric term terms limit limits derivative integral matrix vector "
    "set sets subset element elements count counting ways choose arrangement permutation combination "
    "event events outcome outcomes chance random expected inequality inequalities bound minimum maximum "
    "positive negative zero one two three four five six seven eight nine ten hundred thousand million "
    "half quarter twice double triple greater less larger smaller largest smallest possible impossible "
    "true false assume suppose consider given known unknown condition conditions case cases example "
    "simplify expand substitute plug evaluate rewrite factorize cancel isolate approximate estimate "
    "because since therefore however although while whereas otherwise instead indeed perhaps maybe "
    "apple apples orange oranges book books car cars train trains hour hours minute minutes day days "
    "week weeks year years dollar dollars cent cents price cost costs pay paid buy bought sell sold "
    "people person student students teacher class school friend friends family money time distance "
    "speed rate rates work worker workers machine machines water tank pipe pipes mixture solution "
    "Alice Bob Carol David Emma Frank Grace Henry John Mary Tom Sara"
)


def tiny_config(vocab_size: int, bos_id: int, eos_id: int) -> BailingMoeV2Config:
    """Ring-mini-2.0's architecture at toy size."""
    return BailingMoeV2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        partial_rotary_factor=0.5,
        use_qk_norm=True,
        use_rmsnorm=True,  # read by vLLM: without it the q/k norms become LayerNorms with a bias
        max_position_embeddings=4096,
        rope_theta=600000.0,
        num_experts=16,
        num_experts_per_tok=4,
        n_group=4,
        topk_group=2,
        num_shared_experts=1,
        moe_intermediate_size=32,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        num_nextn_predict_layers=1,
        mtp_loss_scaling_factor=0.0,
        initializer_range=0.02,
        pad_token_id=eos_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
        architectures=["BailingMoeV2ForCausalLM"],
    )


def training_corpus(seed: int = SEED, lines: int = 12000) -> list[str]:
    """Deterministic math/English text with digits, chat markup and Long-CoT phrasing."""
    rng = random.Random(seed)
    subjects = ["the number", "a student", "the answer", "each term", "the sum", "this equation", "the proof"]
    verbs = ["equals", "is greater than", "divides", "is less than", "depends on", "follows from"]
    words = COMMON_WORDS.split()
    corpus = []
    for _ in range(lines):
        a, b = rng.randint(0, 999), rng.randint(1, 99)
        op = rng.choice(["+", "-", "*", "/"])
        value = {"+": a + b, "-": a - b, "*": a * b, "/": round(a / b, 3)}[op]
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        kind = rng.randrange(5)
        if kind == 0:
            corpus.append(f"{a} {op} {b} = {value}")
        elif kind == 1:
            corpus.append(
                f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {a}. {sentence.capitalize()}."
            )
        elif kind == 2:
            corpus.append(
                f"<think>\nLet me compute {a} {op} {b}. {sentence}. So the result is {value}.\n</think>\n\n"
                f"The answer is \\boxed{{{value}}}."
            )
        elif kind == 3:
            corpus.append(f"<role>HUMAN</role>What is {a} {op} {b}?<role>ASSISTANT</role><think>\n{sentence}")
        else:
            corpus.append(
                f"Step {rng.randint(1, 9)}: {sentence}, so x = {a} and y = {b}; x {op} y = {value}."
            )
    return corpus


def build_tokenizer(corpus: list[str]):
    """Byte-level BPE (digits split one by one) trained on `corpus`, with Ring's control tokens appended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.add_tokens(ADDED_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        chat_template=CHAT_TEMPLATE_PATH.read_text(encoding="utf-8"),
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def _padded_vocab_size(tokens: int, multiple: int = 64) -> int:
    return (tokens + multiple - 1) // multiple * multiple


def build_tiny_model(output: Path, seed: int = SEED) -> Path:
    """Write the tiny model folder atomically (built in a temp sibling, then renamed into place)."""
    return write_folder_atomically(output, lambda folder: _write_tiny_model(folder, seed))


def _make_files_readable(folder: Path) -> None:
    """Weights and tokenizer files are shared like the folder itself: 0644."""
    for path in folder.iterdir():
        path.chmod(0o644)


def _write_tiny_model(folder: Path, seed: int) -> None:
    tokenizer = build_tokenizer(training_corpus(seed))
    bos_id = tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    role_end_id = tokenizer.convert_tokens_to_ids(ROLE_END_TOKEN)
    config = tiny_config(_padded_vocab_size(len(tokenizer)), bos_id, eos_id)
    config.auto_map = auto_map_for()
    torch.manual_seed(seed)
    model = BailingMoeV2ForCausalLM(config).to(torch.float32)
    _randomize_router_bias(model, seed)
    model.generation_config.bos_token_id = bos_id
    model.generation_config.eos_token_id = [eos_id, role_end_id]
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    copy_model_code(folder)
    _make_files_readable(folder)
    _check_folder(folder)


def _randomize_router_bias(model: BailingMoeV2ForCausalLM, seed: int) -> None:
    """Non-zero expert_bias so tests see that it steers selection (real checkpoints have trained biases)."""
    generator = torch.Generator().manual_seed(seed + 1)
    for name, buffer in model.named_buffers():
        if name.endswith("mlp.gate.expert_bias"):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) * 0.1)


def _check_folder(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    missing = [name for name in MODEL_CODE_FILES if not (folder / name).is_file()]
    if missing or "auto_map" not in config:
        raise RuntimeError(f"{folder}: tiny model folder incomplete (missing {missing or 'auto_map'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=Path("models/ring-tiny"), help="folder to write")
    parser.add_argument("--seed", type=int, default=SEED, help="seed for weights and corpus")
    args = parser.parse_args(argv)
    folder = build_tiny_model(args.output, args.seed)
    print(f"tiny Ring model written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
