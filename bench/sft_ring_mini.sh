#!/usr/bin/env bash
# GPU benchmark: the Ring-mini LoRA recipe (recipes/ring-mini-lora.yaml) through plain llamafactory-cli on a RANDOM
# Ring-mini-shaped model (full shape: 20 layers, 256 experts, vocab 157184; bf16), a few steps on synthetic
# Long-CoT rows that fill cutoff_len. Reports tokens/s (steady state, warm-up steps excluded) and peak GPU memory.
#
# Needs: 1 CUDA GPU with >= 48 GB, ~40 GB free disk (the random checkpoint is written once, ~33 GB), the .venv.
# Usage: bash bench/sft_ring_mini.sh [--steps 40] [--cutoff-len 4096] [--work DIR] [extra llamafactory key=value ...]
# Output: $WORK/report.json and a summary line; trainer_log.jsonl and nvidia-smi samples under $WORK.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
STEPS=40
CUTOFF=4096
WORK="${WORK:-$ROOT/outputs/bench/sft_ring_mini}"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --cutoff-len) CUTOFF="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
export PATH="$ROOT/.venv/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RECORD_VRAM=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: this benchmark needs one')"
mkdir -p "$WORK"
MODEL="$WORK/ring-mini-random"
DATA="$WORK/data"
OUT="$WORK/run"

# 1. A random model with Ring-mini's published shape, our model code and the tiny Ring tokenizer (ids < vocab).
if [[ ! -f "$MODEL/config.json" ]]; then
  "$PY" -m ring_trl.models.tiny --output "$WORK/ring-tiny"
  "$PY" - "$WORK/ring-tiny" "$MODEL" <<'PYEOF'
import shutil, sys
from pathlib import Path
import torch
from ring_trl.models import register_auto_classes
from ring_trl.models.bailing_moe_v2 import BailingMoeV2Config, BailingMoeV2ForCausalLM
from ring_trl.models.files import auto_map_for, copy_model_code
from transformers import AutoTokenizer

tiny, out = Path(sys.argv[1]), Path(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(tiny)
config = BailingMoeV2Config(  # Ring-mini-2.0 config.json values (docs/model.md); defaults cover the rest
    hidden_size=2048, num_hidden_layers=20, num_attention_heads=16, num_key_value_heads=4, head_dim=128,
    intermediate_size=5120, moe_intermediate_size=512, num_experts=256, num_experts_per_tok=8,
    num_shared_experts=1, n_group=8, topk_group=4, first_k_dense_replace=1, routed_scaling_factor=2.5,
    vocab_size=157184, max_position_embeddings=32768, rope_theta=600000.0, partial_rotary_factor=0.5,
    use_qk_norm=True, rms_norm_eps=1e-6, tie_word_embeddings=False, num_nextn_predict_layers=0,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
)
register_auto_classes()
torch.manual_seed(0)
with torch.device("cuda"):
    model = BailingMoeV2ForCausalLM(config).to(torch.bfloat16)
print(f"random Ring-mini: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
out.mkdir(parents=True, exist_ok=True)
model.config.auto_map = auto_map_for()
model.save_pretrained(out, max_shard_size="5GB")
copy_model_code(out)
tokenizer.save_pretrained(out)
PYEOF
fi

# 2. Synthetic Long-CoT rows long enough to fill cutoff_len (the tiny tokenizer is ~1 token per short word).
"$PY" - "$DATA" "$CUTOFF" <<'PYEOF'
import json, random, sys
from pathlib import Path
folder, cutoff = Path(sys.argv[1]), int(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
words = "the sum of two and three is five so we add carry the one then check the result again".split()
with open(folder / "bench.jsonl", "w") as f:
    for i in range(256):
        reasoning = " ".join(rng.choice(words) for _ in range(cutoff))
        row = {"messages": [{"role": "user", "content": f"Problem {i}: add {i} and {i + 1}."},
                            {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{2 * i + 1}"}]}
        f.write(json.dumps(row) + "\n")
info = {"bench": {"file_name": "bench.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}
(folder / "dataset_info.json").write_text(json.dumps(info))
PYEOF

# 3. The recipe, unchanged except for paths, length and a short run.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/nvidia_smi_mem.csv" &
SMI_PID=$!
trap 'kill $SMI_PID 2>/dev/null || true' EXIT
cd "$ROOT"
llamafactory-cli train recipes/ring-mini-lora.yaml \
  model_name_or_path="$MODEL" dataset=bench dataset_dir="$DATA" cutoff_len="$CUTOFF" \
  max_steps="$STEPS" gradient_accumulation_steps=1 logging_steps=1 save_strategy=no plot_loss=false \
  report_to=none output_dir="$OUT" include_num_input_tokens_seen=true preprocessing_num_workers=4 \
  "${EXTRA[@]}" 2>&1 | tee "$WORK/train.log"
kill $SMI_PID 2>/dev/null || true

# 4. Steady-state tokens/s from LLaMA-Factory's per-step log (steps 1-2 are warm-up), peak memory.
"$PY" - "$OUT" "$WORK/nvidia_smi_mem.csv" "$WORK/report.json" "$CUTOFF" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def seconds(hms):  # LLaMA-Factory logs elapsed time as H:MM:SS (1 s resolution: hence the default 40 steps)
    h, m, s = (int(x) for x in hms.split(":"))
    return 3600 * h + 60 * m + s
steps = [e for e in map(json.loads, (out / "trainer_log.jsonl").read_text().splitlines()) if "total_tokens" in e and "loss" in e]
first, last = steps[min(2, len(steps) - 2)], steps[-1]
window = seconds(last["elapsed_time"]) - seconds(first["elapsed_time"])
results = json.loads((out / "all_results.json").read_text())
smi = [int(x) for x in open(sys.argv[2]).read().split() if x.strip().isdigit()]
report = {
    "recipe": "recipes/ring-mini-lora.yaml", "cutoff_len": int(sys.argv[4]), "steps": len(steps),
    "tokens_per_s_steady": round((last["total_tokens"] - first["total_tokens"]) / window, 1) if window else None,
    "tokens_per_s_whole_run": round(last["total_tokens"] / results["train_runtime"], 1),
    "train_runtime_s": results["train_runtime"],
    "peak_allocated_gib": last.get("vram_allocated"), "peak_reserved_gib": last.get("vram_reserved"),
    "peak_nvidia_smi_mib": max(smi) if smi else None,
}
json.dump(report, open(sys.argv[3], "w"), indent=2)
print("SFT bench:", json.dumps(report))
PYEOF
