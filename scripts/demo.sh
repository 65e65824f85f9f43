#!/usr/bin/env bash
# Installs dependencies, builds, and trains the demo DCGAN on Fashion-MNIST (CPU, about 5 minutes), then prints where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh >/dev/null
if [ ! -f data/fashion-mnist-32.h5 ]; then
  echo "[demo] ingesting Fashion-MNIST from the Debian package into data/fashion-mnist-32.h5"
  mkdir -p data
  ./build/gantrain ingest --from fashion-mnist --out data/fashion-mnist-32.h5 --size 32
fi
echo "[demo] training config/demo.yaml (Fashion-MNIST 32x32, CPU); progress below"
./build/gantrain train --config config/demo.yaml "$@"
