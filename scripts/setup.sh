#!/usr/bin/env bash
# Create .venv (if missing) and install nnunet-ulseg into it, with its test extra.
#
# torch: if the Python that creates the venv already has a working torch+torchvision,
# the venv reuses nothing of it (a venv is isolated); we install torch ourselves only
# when none is importable inside the venv.  nnU-Net's trainer lookup imports every
# trainer module it ships, Primus among them, which imports timm and so torchvision;
# torchvision has to match torch exactly.  The pair 2.14.1 / 0.29.1 is the newest that
# pip can take from this workplace's local wheel store (and from PyPI elsewhere); the
# local 2.13.0 CPU-only wheel cannot be used because no torchvision built for it exists
# there (PyPI's 0.28.0 fails with "operator torchvision::nms does not exist").
# Override with ULSEG_TORCH_SPEC, e.g. ULSEG_TORCH_SPEC="torch==2.5.1 torchvision==0.20.1".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
# pip's own log goes to .venv/pip.log; it is printed only when an install fails.
pip_quiet() {
  if ! python -m pip install "$@" >.venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "[setup] pip install $* failed" >&2
    exit 1
  fi
}
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] installing ${ULSEG_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
  pip_quiet ${ULSEG_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
fi
echo "[setup] installing nnunet-ulseg and its dependencies"
pip_quiet -e ".[test]"
python -c "import torch, nnunetv2, nnunet_ulseg; print(f'[setup] ok: torch {torch.__version__}, nnunet_ulseg {nnunet_ulseg.__version__}')"
