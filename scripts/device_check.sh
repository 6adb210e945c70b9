#!/usr/bin/env bash
# GPU check of infnet-monai: prints JSON (throughput with AMP, peak GPU memory, GPU masks against CPU masks,
# training throughput of the light and the paper configuration). Exit 1 when the GPU masks disagree with the CPU's
# (Dice < 0.99). Run from the repository root on a machine with a CUDA GPU and the project installed:
#     bash scripts/device_check.sh > device_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("device_check.sh: no CUDA device visible to torch " + torch.__version__)
PY
exec python scripts/device_check.py --device cuda "$@"
