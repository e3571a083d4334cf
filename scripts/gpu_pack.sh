#!/usr/bin/env bash
# Build .gpu/, what scripts/gpu_check.sh needs on a GPU machine with no network, beside the working tree:
#   .gpu/wheels/   the Python packages such a machine lacks (pure-Python wheels, pinned below, no dependencies
#                  pulled: every one is listed), for Python 3.12 (multiprocess also for this machine's Python,
#                  so the check runs here too); torch, CUDA and triton are the machine's own, never carried
#   .gpu/stubs/    a stand-in `wandb` module: SAELens imports wandb at module load, and the bench never logs
#   .gpu/<model>   the embedded SmolLM2-135M-Instruct cut to its first $GPU_PACK_LAYERS decoder layers
#                  (scripts/gguf_truncate.py: same tensors, same bytes, block count L), since the whole GGUF
#                  (94 MiB) does not fit in what a device call carries (64 MiB with the tree)
# and prints what a device call would carry in all. Needs `make install` (.venv) and PyPI.
#
#   bash scripts/gpu_pack.sh            # GPU_PACK_LAYERS=8 GPU_PACK_CHECK=1 (compare hidden states, ~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LAYERS=${GPU_PACK_LAYERS:-8}
CHECK=${GPU_PACK_CHECK:-1}
DEST=.gpu

# Not in the machine's image (its list: /work/.library/device/KINDS.md). Versions: requirements.lock's where it
# pins them; the peers' newest that import with the machine's transformers 5.17 and huggingface-hub 1.33.
SARM_NEEDS=(
    jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0  # jsonargparse[signatures]
    gguf==0.19.0                                                            # GGUF reading (the backbone)
    trl==1.16.0 datasets==5.2.0 dill==0.4.1                                 # imported by name in the check
)
PEERS=(
    sae-lens==6.54.12 transformer-lens==3.9.0 better-abc==0.0.3             # SAELens (wandb: the stub)
    eai-sparsify==1.3.3 simple-parsing==0.1.9 natsort==8.4.0 schedulefree==1.4.1
)
TAGGED=(multiprocess==0.70.19)  # a wheel per Python version: the machine's 3.12 and this one's

rm -rf "$DEST/wheels" "$DEST/stubs"
mkdir -p "$DEST/wheels" "$DEST/stubs/wandb"
download() {
    "$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp --platform any "$@" -d "$DEST/wheels" \
        2>&1 | grep -v "^WARNING: Location" || true
}
download --python-version 3.12 "${SARM_NEEDS[@]}" "${PEERS[@]}" "${TAGGED[@]}"
download --python-version "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "${TAGGED[@]}"
expected=$(( ${#SARM_NEEDS[@]} + ${#PEERS[@]} + 2 ))
found=$(find "$DEST/wheels" -name '*.whl' | wc -l)
if [ "$found" -lt "$((expected - 1))" ]; then  # this machine's Python may be 3.12 itself: one multiprocess wheel
    echo "gpu_pack: $found wheels downloaded, expected $expected" >&2
    exit 1
fi
cat > "$DEST/stubs/wandb/__init__.py" <<'EOF'
"""A stand-in for wandb (scripts/gpu_pack.sh): SAELens imports it at module load; bench_sae never logs."""


def __getattr__(name):
    raise ImportError(f"wandb.{name}: wandb is not installed here (a stand-in module from scripts/gpu_pack.sh)")
EOF

model="$DEST/SmolLM2-135M-Instruct-L$LAYERS.gguf"
rm -f "$DEST"/SmolLM2-135M-Instruct-L*.gguf
check=false
[ "$CHECK" = 1 ] && check=true
"$PY" scripts/gguf_truncate.py --layers "$LAYERS" --output "$model" --check "$check"

# What a device call carries: the working tree (tracked files and untracked ones git does not ignore) and .gpu.
tree=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
pack=$(du -sb "$DEST" | cut -f1)
total=$((tree + pack))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu_pack: $DEST $(mib "$pack") ($found wheels, $(basename "$model")), tree $(mib "$tree"): $(mib "$total") of 64 MiB"
if [ "$total" -gt $((60 * 1048576)) ]; then
    echo "gpu_pack: too much for one device call; the largest untracked paths git does not ignore:" >&2
    git ls-files -z -o --exclude-standard --directory | xargs -0 -r du -sb 2>/dev/null | sort -rn | head -5 >&2
    exit 1
fi
echo "carry: [\"$DEST\"]   run: bash scripts/gpu_check.sh   (model: $model, layer $LAYERS)"
