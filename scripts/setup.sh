#!/usr/bin/env bash
# Set-up for the README's commands on a fresh Debian/Ubuntu machine. Idempotent; `make` runs it first.
#
#   scripts/setup.sh                 set everything up (what `make setup` does)
#   scripts/setup.sh --env-python    print the interpreter every make target runs, and nothing else
#
# The environment: an activated virtual environment ($VIRTUAL_ENV) or conda environment
# ($CONDA_PREFIX) when there is one, else the project's own `.venv`, created with $PYTHON
# (default python3). The system Python of Debian 12 / Ubuntu 23.04+ refuses pip installs
# (PEP 668, "externally managed"), so nothing is ever installed into it.
#
# Then, into that environment: the system libraries Open3D needs (apt), Chromium for the HTML
# viewer's browser tests (apt), torch (only when none is importable, so an existing CUDA build is
# kept), and this project with its test extra.
#
# Knobs (environment variables): PYTHON (interpreter that creates .venv), TORCH_SPEC (default
# torch==2.13.0), TORCH_PIP_ARGS (extra pip arguments for torch alone, e.g. an --index-url of
# CPU-only wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

env_dir() {
    if [ -n "${VIRTUAL_ENV:-}" ]; then echo "$VIRTUAL_ENV"
    elif [ -n "${CONDA_PREFIX:-}" ]; then echo "$CONDA_PREFIX"
    else echo "$ROOT/.venv"
    fi
}
ENV_DIR=$(env_dir)
ENV_PY=$ENV_DIR/bin/python

if [ "${1:-}" = "--env-python" ]; then
    echo "$ENV_PY"
    exit 0
fi

say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {      # apt_install PKG...: install Debian/Ubuntu packages, or say what to run
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get here: install the equivalent of '$*' with this system's package manager"
        return 1
    fi
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
        say "not root and no sudo: run 'apt-get install $*' as root"
        return 1
    fi
    say "installing system packages: $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- the environment ------------------------------------------------------------------------
if [ "$ENV_DIR" = "$ROOT/.venv" ]; then
    if [ ! -x "$ENV_PY" ] || ! "$ENV_PY" -m pip --version >/dev/null 2>&1; then
        command -v "$PY" >/dev/null 2>&1 || die "no '$PY' on PATH (set PYTHON=/path/to/python3)"
        "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || die "$PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); pointseg needs >= 3.10"
        # Debian/Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package.
        if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt_install "python$ver-venv" || apt_install python3-venv \
                || die "$PY cannot create virtual environments (no ensurepip): install python$ver-venv"
        fi
        rm -rf "$ENV_DIR"       # a half-made .venv (e.g. from a run without ensurepip)
        say "creating the project environment .venv with $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
        "$PY" -m venv "$ENV_DIR"
    fi
else
    [ -x "$ENV_PY" ] || die "the active environment $ENV_DIR has no bin/python"
    say "using the active environment $ENV_DIR"
fi
PIP=("$ENV_PY" -m pip)

# --- Open3D's shared libraries (GL/EGL/Vulkan through Mesa for headless rendering) -------------
pkgs="libusb-1.0-0 libgl1 libegl1 libgomp1 libvulkan1 mesa-vulkan-drivers"
missing=""
if command -v dpkg >/dev/null 2>&1; then
    for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
fi
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt_install $missing || say "continuing without:$missing (Open3D rendering may fail)"
fi

# --- Chromium: tests/test_html_view.py opens `pointseg view --html` pages in it (skipped without) --
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    apt_install chromium || say "continuing without chromium (the HTML viewer's browser tests will skip)"
fi

# --- torch first: resolving it as a dependency of this project would pull the CUDA wheels -------
if ! "$ENV_PY" -c "import torch" >/dev/null 2>&1; then
    spec=${TORCH_SPEC:-torch==2.13.0}
    say "installing $spec"
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q ${TORCH_PIP_ARGS:-} "$spec"
else
    say "keeping the installed torch $("$ENV_PY" -c 'import torch; print(torch.__version__)')"
fi

# --- this project (editable) with its test extra; redone when pyproject.toml changes ------------
stamp="$ENV_DIR/.pointseg-setup"
want="$ROOT $(cksum < pyproject.toml)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$ENV_PY" -c "import pointseg, pytest" >/dev/null 2>&1; then
    say "installing pointseg and its dependencies into $ENV_DIR"
    "${PIP[@]}" install -q -e ".[test]"
    echo "$want" > "$stamp"
fi
