# edgetl for x86-64 CPUs: `edgetl build` (fine-tune, export, int8, benchmark) and the torch-free runtime.
#
#   docker build -f docker/cpu.Dockerfile -t edgetl:cpu .                            # full image (default)
#   docker build -f docker/cpu.Dockerfile --target runtime -t edgetl:cpu-runtime .   # `edgetl predict` only
#
# Base: the Docker official image python:3.11.15-slim-bookworm (CPython 3.11.15 on Debian 12
# "bookworm", slim variant; 3.11.15 is the version in docker-library/python's 3.11/slim-bookworm
# Dockerfile and versions.json, checked at commit 4f07059, June 2026). No CUDA, no TensorRT.
#
# Stages:
#   wheel    builds the edgetl wheel from pyproject.toml + edgetl/ (nothing else from the context)
#   runtime  `pip install edgetl`: numpy, pillow, onnxruntime, pydantic, pyyaml, typer, rich; no torch
#   build    (default) CPU-only torch/torchvision from the PyTorch CPU index, then edgetl[build]
#
# Written and linted with hadolint; never built or run where it was written (no Docker daemon).

FROM python:3.11.15-slim-bookworm AS base

# One virtual environment, owned by root and read-only for the runtime user; /work is the working
# directory that the README mounts profiles, data and runs into.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/edgetl \
    PATH=/opt/edgetl/bin:$PATH

RUN groupadd --system --gid 10001 edgetl \
    && useradd --system --uid 10001 --gid edgetl --create-home --home-dir /home/edgetl --shell /usr/sbin/nologin edgetl \
    && python -m venv /opt/edgetl \
    && mkdir -p /work \
    && chown edgetl:edgetl /work

WORKDIR /work


FROM base AS wheel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgetl ./edgetl
# The wheel's file name carries the version: write it into two requirement files so the later
# stages install exactly this wheel (`edgetl` or `edgetl[build]`) without globbing.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && set -- /wheels/edgetl-*.whl \
    && printf 'edgetl @ file://%s\n' "$1" > /wheels/runtime.txt \
    && printf 'edgetl[build] @ file://%s\n' "$1" > /wheels/build.txt


FROM base AS runtime

RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --requirement /wheels/runtime.txt \
    && edgetl version \
    && python -c "import sys, edgetl.runtime; sys.exit('torch' in sys.modules)"

USER 10001:10001
ENTRYPOINT ["edgetl"]
CMD ["--help"]


FROM base AS build

# CPU wheels (+cpu local version) from the PyTorch CPU index, so pip never pulls the multi-GB CUDA
# build from PyPI; `pip install edgetl[build]` afterwards finds torch>=2.4 satisfied and keeps it.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-cache-dir --requirement /wheels/build.txt \
    && python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    && edgetl version \
    && edgetl backbones

USER 10001:10001
ENTRYPOINT ["edgetl"]
CMD ["--help"]
