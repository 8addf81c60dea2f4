# edgetl for x86-64 machines with an NVIDIA GPU: `edgetl build` with an nvidia-gpu profile (train,
# export, int8, device bundle, TensorRT 10 engine), `edgetl engine build BUNDLE` and `edgetl predict`.
#
#   docker build -f docker/tensorrt.Dockerfile -t edgetl:tensorrt .
#   docker run --rm --gpus all edgetl:tensorrt engine build /bundle     (see docker/README.md)
#
# Base: NVIDIA NGC nvcr.io/nvidia/tensorrt:25.01-py3 (linux/amd64). Release 25.01 is TensorRT
# 10.8.0.43 on CUDA 12.8.0 (with cuDNN 9), Ubuntu 24.04, Python 3.12.3: the same TensorRT/CUDA/
# Python that NVIDIA's Triton release compatibility matrix lists for its 25.01 containers, and what
# projects pinning tensorrt:25.01-py3 report. CUDA 12.8 needs an R570+ host driver (R535/R545
# datacenter drivers via forward compatibility); 25.01 supports compute capability 7.5+ (Turing and
# newer). edgetl's builder speaks the TensorRT 10 API only: do not move this base to a release that
# ships TensorRT 11. Check the exact versions in the image with:
#   docker run --rm --entrypoint python edgetl:tensorrt -c "import tensorrt; print(tensorrt.__version__)"
#
# TensorRT's Python bindings come from the base image; pip must not install the PyPI `tensorrt`
# wheels over them (a second, different libnvinfer next to the image's, or TensorRT 11 from
# `tensorrt>=10.0`). So edgetl lives in a virtual environment created with --system-site-packages
# (it sees the image's tensorrt package) and every pip call gets a constraints file pinning
# `tensorrt==<the version the base ships>`, which the base's copy already satisfies.
#
# torch: the default PyPI wheel of torch 2.14.1 is the CUDA 13 build (its own CUDA runtime, needs
# an R580+ driver for GPU training). Set TORCH_INDEX_URL to a PyTorch index for another CUDA build.
#
# Written and linted with hadolint; never built or run where it was written (no Docker daemon).

FROM nvcr.io/nvidia/tensorrt:25.01-py3 AS wheel

WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgetl ./edgetl
# The wheel's file name carries the version: write it into a requirement file for the next stage.
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && set -- /wheels/edgetl-*.whl \
    && printf 'edgetl[build,tensorrt] @ file://%s\n' "$1" > /wheels/edgetl.txt


FROM nvcr.io/nvidia/tensorrt:25.01-py3

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG PYCUDA_VERSION=2026.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/edgetl \
    PATH=/opt/edgetl/bin:/usr/local/cuda/bin:$PATH

# python3-venv for the environment; build-essential + python3-dev to compile pycuda (sdist only)
# against the CUDA toolkit in the image. Ubuntu package versions are fixed by the pinned base tag
# (Ubuntu 24.04 as of NGC 25.01) plus security updates; exact apt pins would break on every update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*

# pycuda is built against /usr/local/cuda (the driver library links through the toolkit's stubs,
# no GPU needed at build time); CURAND is switched off because edgetl only uses pycuda.driver.
# The checks read package metadata only: importing pycuda or TensorRT needs the host's libcuda,
# which `docker build` does not have.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    groupadd --system --gid 10001 edgetl \
    && useradd --system --uid 10001 --gid edgetl --create-home --home-dir /home/edgetl --shell /usr/sbin/nologin edgetl \
    && mkdir -p /work && chown edgetl:edgetl /work \
    && TRT_VERSION="$(python3 -c 'import importlib.metadata as m; print(m.version("tensorrt"))')" \
    && case "${TRT_VERSION}" in 10.*) ;; *) echo "base image ships TensorRT ${TRT_VERSION}, edgetl needs 10.x" >&2; exit 1 ;; esac \
    && printf 'tensorrt==%s\npycuda==%s\ntorch==%s\ntorchvision==%s\n' \
        "${TRT_VERSION}" "${PYCUDA_VERSION}" "${TORCH_VERSION}" "${TORCHVISION_VERSION}" > /etc/edgetl-constraints.txt \
    && printf 'CUDA_ROOT = "/usr/local/cuda"\nCUDA_ENABLE_CURAND = False\n' > /etc/aksetup-defaults.py \
    && python3 -m venv --system-site-packages /opt/edgetl \
    && pip install --no-cache-dir --constraint /etc/edgetl-constraints.txt --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-cache-dir --constraint /etc/edgetl-constraints.txt --requirement /wheels/edgetl.txt \
    && test "$(python -c 'import importlib.metadata as m; print(m.version("tensorrt"))')" = "${TRT_VERSION}" \
    && python -c "import importlib.metadata as m; print('tensorrt', m.version('tensorrt'), 'pycuda', m.version('pycuda'))" \
    && edgetl version

WORKDIR /work
USER 10001:10001
# Replaces NGC's /opt/nvidia/nvidia_entrypoint.sh (banner, CUDA forward-compatibility setup for
# older datacenter drivers); on such hosts run it explicitly:
#   docker run --gpus all --entrypoint /opt/nvidia/nvidia_entrypoint.sh edgetl:tensorrt edgetl ...
ENTRYPOINT ["edgetl"]
CMD ["--help"]
