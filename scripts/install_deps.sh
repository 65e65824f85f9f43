#!/usr/bin/env bash
# Installs every build, test and demo dependency of gantrain from Debian's packages (needs root or sudo).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev libomp-14-dev      # fuzz targets: clang with libFuzzer and the sanitizers (docs/fuzzing.md)
  libopenmpi-dev openmpi-bin            # MPI ranks (issue: distributed)
  libhdf5-dev                           # checkpoints and datasets
  libyaml-cpp-dev                       # config files
  libgtest-dev                          # unit tests
  libopenblas-dev                       # CPU GEMM
  libpng-dev zlib1g-dev                 # PNG sample grids, gzipped IDX files
  libxxhash-dev python3-xxhash          # checkpoints' whole-file digest (XXH3-128), and its check in the Python tests
  libjpeg62-turbo-dev                   # JPEG decoding for gantrain ingest (libjpeg-turbo)
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libprotobuf-dev protobuf-compiler     # TensorBoard event files: Event messages generated from src/io/tensorboard_event.proto
  python3-venv                          # scripts/tensorboard_venv.sh: TensorBoard from PyPI for the e2e test that reads our events
  python3-torch python3-numpy python3-h5py python3-yaml   # PyTorch oracle tests and benchmarks (/usr/bin/python3)
  python3-matplotlib                    # tools/plot_metrics.py: a run's metrics as one PNG (the demo draws it)
  dataset-fashion-mnist                 # the demo's default data set
  slurm-wlm munge                       # tests/slurm: a one-node Slurm cluster for slurm/*.sbatch
)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[install] all ${#PKGS[@]} Debian packages already installed"
  exit 0
fi
echo "[install] installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[install] done"
