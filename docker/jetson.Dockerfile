# edgetl on a Jetson Orin (Orin Nano / Orin NX / AGX Orin) running JetPack 6.1 or 6.2 (L4T r36.4.x):
# `edgetl engine build BUNDLE` (build + verify the TensorRT engine on the device) and
# `edgetl predict BUNDLE IMAGES...`. Core edgetl only: no torch, so no `edgetl build`; training
# happens on the workstation (cpu.Dockerfile / tensorrt.Dockerfile), which writes the device bundle.
#
#   docker build -f docker/jetson.Dockerfile -t edgetl:jetson .           # on the Jetson itself, or
#   docker buildx build --platform linux/arm64 -f docker/jetson.Dockerfile -t edgetl:jetson .
#   docker run --rm --runtime nvidia -v "$PWD/bundle:/bundle" edgetl:jetson engine build /bundle
#
# Base: NVIDIA NGC nvcr.io/nvidia/l4t-jetpack:r36.4.0 (linux/arm64): L4T r36.4 = JetPack 6.1, with
# the JetPack user-space stack inside the image: CUDA 12.6, cuDNN 9.3, TensorRT 10.3 (C++ libraries
# and the python3 bindings), on Ubuntu 22.04 with Python 3.10. Those are JetPack 6.1's component
# versions as documented in Torch-TensorRT's JetPack page (docs.pytorch.org/TensorRT, "JetPack 6.1:
# CUDA 12.6, TensorRT 10.3, cuDNN 9.3") and in edgetl's own target table (`edgetl targets`);
# JetPack 6.2 (L4T r36.4.3) keeps TensorRT 10.3 / CUDA 12.6. The host must run L4T r36.4.x: an
# engine only loads on the TensorRT version and GPU it was built with, which is why this image
# builds it on the device. JetPack 6.0 (L4T r36.3) ships TensorRT 8.6 and is not supported.
#
# Not supported:
# - Training on the Jetson: the image has no torch/timm/onnx (edgetl's `build` extra); `edgetl
#   build` stops with a missing-dependency error. Build the bundle on a workstation.
# - Jetson Nano (Maxwell): its last JetPack is 4.6.x (L4T r32.7, Ubuntu 18.04, CUDA 10.2, TensorRT
#   8.2, Python 3.6). An r36 image does not run on an r32 host (kernel/driver and CUDA 12 user space
#   do not match), and edgetl needs Python >= 3.10 and the TensorRT 10 builder API. For the
#   jetson-nano target run the bundle's build_engine.sh (trtexec) directly on the Nano instead.
#
# Written and linted with hadolint; never built or run where it was written (no Docker daemon).

FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0 AS wheel

# python3-pip: the wheel stage builds edgetl's pure-Python wheel. Ubuntu package versions are
# fixed by the pinned base tag (Ubuntu 22.04 of L4T r36.4) plus security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgetl ./edgetl
# The wheel's file name carries the version: write it into a requirement file for the next stage.
RUN python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && set -- /wheels/edgetl-*.whl \
    && printf 'edgetl @ file://%s\n' "$1" > /wheels/edgetl.txt


FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

# onnxruntime: the CPU wheel from PyPI (manylinux aarch64); 1.23.2 is the newest release with a
# CPython 3.10 aarch64 wheel. It runs the ONNX artefacts (`edgetl predict BUNDLE --artifact onnx`)
# and nothing more: GPU inference on the Jetson goes through the TensorRT engine.
# numpy 1.26.4: a conservative NumPy 1.x (Ubuntu 22.04's own python3-numpy is 1.21); TensorRT
# 10.3's Python bindings have not been tried with NumPy 2 here.
ARG PYCUDA_VERSION=2026.1
ARG ONNXRUNTIME_VERSION=1.23.2
ARG NUMPY_VERSION=1.26.4

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/edgetl \
    PATH=/opt/edgetl/bin:/usr/local/cuda/bin:$PATH

# python3-venv for the environment; build-essential + python3-dev to compile pycuda (sdist only)
# against the image's CUDA 12.6 toolkit; python3-libnvinfer is JetPack's TensorRT Python package
# (a no-op when the base already has it, as l4t-jetpack should). Versions come with the pinned
# base tag and its L4T r36.4 apt repository (see above).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3-dev python3-libnvinfer python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The venv sees JetPack's tensorrt Python package (--system-site-packages); the constraints file
# pins `tensorrt` to that version, so pip never fetches PyPI TensorRT wheels (not built for
# JetPack) over it. pycuda links the driver through the toolkit's stubs (the real libcuda is
# mounted by `--runtime nvidia` at run time), so the checks read metadata instead of importing.
# The user joins `video`, the group that owns the Jetson GPU device nodes.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    groupadd --system --gid 10001 edgetl \
    && useradd --system --uid 10001 --gid edgetl --groups video --create-home --home-dir /home/edgetl \
        --shell /usr/sbin/nologin edgetl \
    && mkdir -p /work && chown edgetl:edgetl /work \
    && TRT_VERSION="$(python3 -c 'import importlib.metadata as m; print(m.version("tensorrt"))')" \
    && case "${TRT_VERSION}" in 10.*) ;; *) echo "base image ships TensorRT ${TRT_VERSION}, edgetl needs 10.x" >&2; exit 1 ;; esac \
    && printf 'tensorrt==%s\npycuda==%s\nonnxruntime==%s\nnumpy==%s\n' \
        "${TRT_VERSION}" "${PYCUDA_VERSION}" "${ONNXRUNTIME_VERSION}" "${NUMPY_VERSION}" > /etc/edgetl-constraints.txt \
    && printf 'CUDA_ROOT = "/usr/local/cuda"\nCUDA_ENABLE_CURAND = False\n' > /etc/aksetup-defaults.py \
    && python3 -m venv --system-site-packages /opt/edgetl \
    && pip install --no-cache-dir --constraint /etc/edgetl-constraints.txt --requirement /wheels/edgetl.txt \
        "pycuda==${PYCUDA_VERSION}" "onnxruntime==${ONNXRUNTIME_VERSION}" \
    && test "$(python -c 'import importlib.metadata as m; print(m.version("tensorrt"))')" = "${TRT_VERSION}" \
    && python -c "import importlib.metadata as m; print('tensorrt', m.version('tensorrt'), 'pycuda', m.version('pycuda'))" \
    && edgetl version

WORKDIR /work
USER 10001:10001
ENTRYPOINT ["edgetl"]
CMD ["--help"]
