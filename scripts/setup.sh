#!/usr/bin/env bash
# One-shot set-up on a fresh Debian/Ubuntu machine: system libraries Open3D needs, torch (kept
# if already installed, e.g. a CUDA build), then this project with its test extra. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Open3D's shared libraries (GL/EGL/Vulkan through Mesa for headless rendering).
pkgs="libusb-1.0-0 libgl1 libegl1 libgomp1 libvulkan1 mesa-vulkan-drivers"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# torch first: a bare 'pip install .' would resolve torch from the index and pull CUDA wheels.
if ! $PY -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==${TORCH_VERSION:-2.13.0} (CPU build)"
    $PY -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
else
    echo "[setup] keeping installed torch $($PY -c 'import torch; print(torch.__version__)')"
fi

if ! $PY -c "import pointseg, pytest" >/dev/null 2>&1 || [ pyproject.toml -nt .setup-stamp ]; then
    echo "[setup] installing pointseg and its dependencies"
    $PY -m pip install -q -e ".[test]"
    touch .setup-stamp
fi
