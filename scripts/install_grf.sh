#!/usr/bin/env bash
# Install Google Research Football (gfootball 2.10.2, built from source) into the CURRENT `python`.
#
#   bash scripts/install_grf.sh            # as root, or as a user with sudo (for apt-get)
#   PYTHON=/path/to/python bash scripts/install_grf.sh
#
# Fresh Debian 12 / Ubuntu 22.04+: ~8 minutes on free cores (the C++ engine build dominates;
# 29 min measured on 2 busy shared cores).
# Idempotent: does nothing when `python -c "import gfootball"` already works and the engine loads.
#
# Pins (each one fixes a known failure, see docs/envs.md, Google Research Football):
# - gfootball==2.10.2: the last release; there are no wheels, it compiles its C++ engine with CMake
#   (Debian build dependencies below; "Failed building wheel for gfootball" = one is missing).
# - --no-build-isolation: gfootball's build script runs `python3 -c 'import psutil'`, which an
#   isolated build environment hides; so psutil/wheel/setuptools are installed first.
# - gym==0.25.2: gym 0.26 changed reset()/step() and breaks gfootball's wrappers.
# - six: imported by gfootball but not declared.
# - --no-deps for gfootball itself (its declared pygame/opencv-python would clobber pygame-ce and
#   other OpenCV builds); its runtime dependencies are installed explicitly instead.
set -Eeuo pipefail

PY="${PYTHON:-python}"
STEP="start"
trap 'echo "install_grf.sh: FAILED during: ${STEP} (exit $?; see the output above)" >&2' ERR

check() {
  "$PY" - <<'EOF' >/dev/null 2>&1
import gfootball, gfootball_engine  # noqa: F401  (the compiled engine must load too)
import gfootball.env as football_env  # noqa: F401
EOF
}

STEP="locating python"
command -v "$PY" >/dev/null || { echo "install_grf.sh: FAILED: no '$PY' on PATH (set PYTHON=...)" >&2; exit 1; }
echo "install_grf.sh: python = $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

if check; then
  echo "install_grf.sh: gfootball already installed ($("$PY" -c 'import importlib.metadata as m; print(m.version("gfootball"))')), nothing to do"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_grf.sh: FAILED: not root and no sudo; apt-get needs root" >&2; exit 1
  fi
fi

start=$(date +%s)
STEP="apt-get update"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
STEP="apt-get install (build dependencies)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  cmake build-essential python3-dev libgl1-mesa-dev libegl-dev \
  libsdl2-dev libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev \
  libboost-thread-dev libboost-system-dev libboost-filesystem-dev libboost-python-dev

# The engine links Debian's Boost.Python, which is built for the system Python (3.11 on Debian 12):
# the interpreter must be the same major.minor version to load it.
sys_py=""
if [ -x /usr/bin/python3 ]; then sys_py="$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; fi
cur_py="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ -n "$sys_py" ] && [ "$sys_py" != "$cur_py" ]; then
  echo "install_grf.sh: WARNING: system python is $sys_py but $PY is $cur_py; the engine is built" \
       "against the system's Boost.Python (built for $sys_py) and may not load" >&2
fi

STEP="pip install build prerequisites (psutil wheel setuptools)"
"$PY" -m pip install -q setuptools wheel psutil
# gfootball declares `pygame` and `opencv-python`; installing them over pygame-ce (which mpe2 needs)
# or over another OpenCV build clobbers the shared `pygame`/`cv2` modules. So gfootball goes in with
# --no-deps and its runtime dependencies are added here, keeping whichever pygame/cv2 is present.
STEP="pip install gfootball runtime dependencies"
"$PY" -m pip install -q "gym==0.25.2" six scipy absl-py
"$PY" -c "import pygame" >/dev/null 2>&1 || "$PY" -m pip install -q pygame-ce
"$PY" -c "import cv2" >/dev/null 2>&1 || "$PY" -m pip install -q opencv-python-headless
STEP="pip install gfootball==2.10.2 (compiles the C++ engine, several minutes)"
PYGAME_HIDE_SUPPORT_PROMPT=1 "$PY" -m pip install --no-build-isolation --no-deps "gfootball==2.10.2"

STEP="import check"
if ! check; then
  "$PY" -c "import gfootball_engine" || true
  echo "install_grf.sh: FAILED: gfootball installed but does not import (see the error above)" >&2
  exit 1
fi
STEP="smoke test"
"$PY" - <<'EOF'
import gfootball.env as football_env
env = football_env.create_environment(
    env_name="academy_3_vs_1_with_keeper", representation="simple115v2",
    number_of_left_players_agent_controls=3, rewards="scoring,checkpoints")
obs = env.reset()
assert obs.shape == (3, 115), obs.shape
env.step([0, 0, 0])
env.close()
EOF
echo "install_grf.sh: OK, gfootball $("$PY" -c 'import importlib.metadata as m; print(m.version("gfootball"))') installed in $(( $(date +%s) - start ))s"
