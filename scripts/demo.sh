#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the main job: a tiny selective-SSM model trained on a synthetic
# delayed-copy task with the embedded default config (configs/demo.json); prints its loss falling.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 examples/train_synthetic.py "$@"
