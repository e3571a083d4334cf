#!/usr/bin/env bash
# The whole SARM pipeline on the embedded SmolLM2-135M-Instruct and the built-in planted-attribute pairs:
# cache hidden states -> train a TopK SAE -> train SARM's head on the frozen SAE (and a sparser L1 head, and the
# residualized SARM: <= 50 features + a small dense residual)
# -> test -> attribution -> report -> planted-attribute recovery.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
sarm cache --config configs/demo/cache.yaml
sarm fit --config configs/demo/sae.yaml
sarm fit --config configs/demo/sarm.yaml
sarm test --config configs/demo/sarm.yaml --model.init_args.init_from runs/demo/sarm/export
sarm fit --config configs/demo/sarm_sparse.yaml
sarm fit --config configs/demo/residual.yaml
sarm test --config configs/demo/residual.yaml --model.init_args.init_from runs/demo/residual/export
sarm attribute --config configs/demo/attribute.yaml
sarm report --config configs/demo/report.yaml
python scripts/demo_summary.py runs/demo
sarm recovery --sarm runs/demo/sarm/export --cache runs/demo/cache --output runs/demo/recovery.json
echo "with the sparse (L1) head:"
sarm recovery --sarm runs/demo/sarm_sparse/export --cache runs/demo/cache --output runs/demo/recovery_sparse.json
echo "demo finished in $(( $(date +%s) - start )) s"
