#!/usr/bin/env bash
# Creates .venv-tb (Debian's python3 with its system packages, plus TensorBoard from PyPI) for the e2e test that reads our event files with TensorBoard's own reader.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GANTRAIN_TB_VENV:-.venv-tb}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import tensorboard" 2>/dev/null; then
  echo "[tensorboard] $VENV already has tensorboard $("$VENV/bin/python" -c 'import tensorboard; print(tensorboard.__version__)')"
  exit 0
fi
# --system-site-packages: the test also needs Debian's numpy and h5py (scripts/install_deps.sh).
/usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check tensorboard
echo "[tensorboard] installed tensorboard $("$VENV/bin/python" -c 'import tensorboard; print(tensorboard.__version__)') into $VENV"
