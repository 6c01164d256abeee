# syntax=docker/dockerfile:1
# marlopt with every simulator: CUDA PyTorch, StarCraft II 4.10 + the SMAC and SMACv2 maps, Google
# Research Football (built from source), SMAX (JaxMARL, CPU JAX), MPE and the plot/sweep/render/wandb
# extras. Build, run on a GPU, mount a runs directory: docs/docker.md.
#
#   docker build -t marlopt .
#   docker run --rm --gpus all -v "$PWD/runs:/workspace/runs" marlopt algo=mappo device=cuda
#
# Base image: Debian 12 with its own Python 3.11, not a conda-based pytorch/pytorch image. GRF's C++
# engine links Debian's Boost.Python, which is built for Debian's Python; pytorch/pytorch ships
# Ubuntu 22.04 (Boost.Python for 3.10) with conda's Python 3.11, and the engine then does not load
# (scripts/install_grf.sh warns about exactly this). This is the setup CI tests (Debian 12, 3.11).
# CUDA comes with the torch wheel: PyPI's Linux x86_64 torch wheels bundle the CUDA runtime and
# cuDNN, so `--gpus all` (NVIDIA Container Toolkit) is all the host needs; the build checks that
# the installed torch is a CUDA build.
ARG DEBIAN_TAG=12.11-slim
FROM debian:${DEBIAN_TAG}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYGAME_HIDE_SUPPORT_PROMPT=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SC2PATH=/opt/StarCraftII

# Python 3.11 (Debian 12's), unzip + wget for StarCraft II, git for smac/smacv2 (not on PyPI).
# DL3008: the packages follow Debian 12's security updates; exact pins would break the build as
# soon as the mirror drops the pinned revision.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates git python3 python3-dev python3-venv unzip wget \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# PyTorch first (the largest layer, changes least); TORCH_VERSION is the version CI tests (.ci/run).
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'torch ' + torch.__version__ + ' is a CPU build; the image needs a CUDA wheel')"

# The non-root user that runs training; it owns SC2PATH (StarCraft II is installed as this user)
# and /workspace (the working directory, where runs/ is written).
ARG USER_NAME=marl
ARG USER_UID=1000
RUN useradd --create-home --uid "${USER_UID}" --shell /bin/bash "${USER_NAME}" \
    && mkdir -p "$SC2PATH" /workspace \
    && chown "${USER_NAME}:${USER_NAME}" "$SC2PATH" /workspace

# StarCraft II 4.10 (Linux package SC2.4.10.zip; its password is the acceptance of Blizzard's AI and
# Machine Learning License, see scripts/install_sc2.sh) and the SMAC + SMACv2 maps, into $SC2PATH.
COPY scripts/install_sc2.sh /opt/marlopt/scripts/install_sc2.sh
USER ${USER_UID}
RUN bash /opt/marlopt/scripts/install_sc2.sh
# back to root (numeric: hadolint DL3066) for the system-wide installs below
USER 0

# Google Research Football 2.10.2: Debian build dependencies (apt) + the C++ engine build, into the
# venv's python; the script ends with an import check and a smoke test.
COPY scripts/install_grf.sh /opt/marlopt/scripts/install_grf.sh
RUN PYTHON=/opt/venv/bin/python bash /opt/marlopt/scripts/install_grf.sh \
    && rm -rf /var/lib/apt/lists/*

# smac and smacv2 (not on PyPI; pinned commits) with pysc2 4.0.0, all --no-deps: they declare
# `pygame` (which would overwrite pygame-ce, needed by mpe2) and smac/smacv2 `protobuf<3.21` (which
# contradicts tensorboard's protobuf>=6); their other runtime dependencies are listed here instead.
RUN pip install --no-cache-dir --no-deps \
        "smac @ git+https://github.com/oxwhirl/smac.git@d6aab33f76abc3849c50463a8592a84f59a5ef84" \
        "smacv2 @ git+https://github.com/oxwhirl/smacv2.git@577ab5a2cff2391f8df582da5731ea9cd6adf3c6" \
        "pysc2==4.0.0" \
    && pip install --no-cache-dir \
        "absl-py>=0.1.0" "deepdiff>=6" "dm-env>=1.6" "mock>=5" "mpyq>=0.2.5" "portpicker>=1.2.0" \
        "requests>=2.28" "s2clientprotocol>=4.10.1.75800.0" "s2protocol>=5" "websocket-client>=1.5"

# marlopt itself with its extras (installed, not editable: the image runs the copy it was built from).
COPY pyproject.toml README.md LICENSE /opt/marlopt/
COPY marlopt /opt/marlopt/marlopt
RUN pip install --no-cache-dir "/opt/marlopt[smax,grf,plot,sweep,render,wandb]" \
    && python -c "import marlopt.train, smac.env, smacv2.env, gfootball.env, jaxmarl, matplotlib, wandb" \
    && python -c "from marlopt.envs.sc2.install import check_sc2_install as c; c('3m.SC2Map'); c('32x32_flat.SC2Map')"

USER ${USER_UID}
WORKDIR /workspace
# `docker run marlopt <overrides>` trains (python -m marlopt.train <overrides>); other entry
# points: `docker run --entrypoint python marlopt -m marlopt.evaluate run=runs/...`.
ENTRYPOINT ["python", "-m", "marlopt.train"]
CMD []
