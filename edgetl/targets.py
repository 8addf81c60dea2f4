"""Deployment targets: which runtime runs the shipped model, in which precision, and what must happen on the device.

A target decides which artefact is *deployed* (the one budgets are checked against), which
precisions its runtime can execute, how much memory an engine build may take there, and which
steps only the device itself can do. For TensorRT targets the shipped model is the ONNX file the
optimize stage validated with ONNX Runtime (the explicit Q/DQ int8 model, or the fp32 model built
as an fp16 engine); the engine is built from it by `edgetl engine build` on a machine with the
target's GPU and TensorRT version, because an engine only runs where it was built.

This module imports nothing heavy: `edgetl validate` and the device runtime use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgetl.backends.tensorrt.versions import TensorRTRelease, installed_release
from edgetl.errors import ProfileError, unknown_name_message


@dataclass(frozen=True)
class EngineDefaults:
    """TensorRT build settings a target starts from; the profile's `tensorrt:` section overrides them."""

    tensorrt: str  # the TensorRT release the target ships, e.g. "8.2" (JetPack 4.6); on x86 the oldest supported
    workspace_mb: int  # builder workspace limit: small Jetsons run out of memory with TensorRT's default
    max_batch: int
    dla_cores: int = 0  # Deep Learning Accelerator cores on the module (0: none)
    # x86: whatever TensorRT the build machine has (pip), when it has one, instead of `tensorrt`.
    installed_tensorrt: bool = False

    @property
    def release(self) -> TensorRTRelease:
        return TensorRTRelease.parse(self.tensorrt)


@dataclass(frozen=True)
class Verification:
    """How far edgetl has checked a target: `short` for the list, `detail` for `edgetl targets NAME`."""

    short: str
    detail: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str  # the backend that runs the default deployed artefact: "onnxruntime", "tensorrt", "openvino", "litert"
    precisions: tuple[str, ...]  # what the target's runtime executes: "fp32", "fp16", "int8"
    # Artefact shipped when int8 quantization is enabled / disabled.
    deploy_int8: str
    deploy_float: str
    # Precision of the TensorRT engine built from the deployed ONNX, when int8 is enabled / disabled.
    engine_precision_int8: str | None = None
    engine_precision_float: str | None = None
    engine: EngineDefaults | None = None
    # Runtimes whose artefacts are converted from the ONNX models and measured next to them (`convert.runtimes`).
    converts_to: tuple[str, ...] = ()
    # "target": ship deploy_int8 / deploy_float; "fastest": the fastest measured artefact that passes
    # the accuracy checks (`benchmark.deploy`).
    deploy: str = "target"
    build_on_device: bool = False  # the engine must be built on the device itself (always true for Jetson)
    # The deployed int8 model runs on an x86-64 CPU, where u8s8 kernels without VNNI saturate (reduce_range: auto).
    x86_cpu: bool = False
    device_memory_mb: int | None = None
    software: str = ""
    on_device: tuple[str, ...] = field(default_factory=tuple)
    verified_here: bool = False
    # The device is a web browser: the bundle carries a page and a JavaScript module that run model_pixels.onnx
    # in onnxruntime-web, and the build runs that page in Chromium here (the browser stage).
    browser: bool = False
    # What has run this target's bundles, and where (`edgetl targets` and the README's table say it).
    verified: Verification = field(default_factory=lambda: Verification("not run", "no bundle for it has run yet"))
    notes: str = ""

    def deployed_artifact(self, int8_enabled: bool) -> str:
        return self.deploy_int8 if int8_enabled else self.deploy_float

    def engine_precision(self, int8_enabled: bool) -> str | None:
        """Precision of the engine built on the device, or None for ONNX Runtime targets."""
        return self.engine_precision_int8 if int8_enabled else self.engine_precision_float

    @property
    def supports_int8(self) -> bool:
        return "int8" in self.precisions

    @property
    def uses_tensorrt(self) -> bool:
        return self.runtime == "tensorrt"

    def tensorrt_release(self) -> TensorRTRelease | None:
        """The release this target's engines are built with: its own, or on x86 the one installed here."""
        if self.engine is None:
            return None
        if self.engine.installed_tensorrt:
            return installed_release() or self.engine.release
        return self.engine.release


# What has run each family's bundles, and where (`Target.verified`).
_VERIFIED_BUILD_MACHINE = Verification(
    "run and measured here", "built, run and measured on the build machine (x86-64) by every build and the tests"
)
_ARM64_EMULATED = (
    "its bundles run on arm64 in CI under emulation (qemu-user, Cortex-A76, Debian 12 Python 3.11): "
    "bundle verify and predict agree with x86 on every image; not run on real {device}, and no latency "
    "measured there"
)
_VERIFIED_TENSORRT = Verification(
    "not run",
    "TensorRT cannot run here; the engine options are checked against NVIDIA's trtexec option parser and "
    "edgetl's TensorRT calls against its type stubs (a GPU check exists for a lent GPU machine)",
)

_ORT_STEPS = (
    "pip install edgetl   # core install: numpy, pillow, onnxruntime; no torch",
    "edgetl predict BUNDLE_DIR image.jpg",
)
_TRT_STEPS = (
    "copy the bundle directory to the device",
    "edgetl engine build BUNDLE_DIR   # or run the bundle's trtexec command",
    "edgetl predict BUNDLE_DIR image.jpg",
)

# Fields shared by every target of one runtime family.
_ONNXRUNTIME: dict = {
    "runtime": "onnxruntime",
    "precisions": ("fp32", "int8"),
    "deploy_int8": "onnx_int8",
    "deploy_float": "onnx_fp32",
    "on_device": _ORT_STEPS,
}
_TENSORRT: dict = {
    "runtime": "tensorrt",
    "precisions": ("fp32", "fp16", "int8"),
    "deploy_int8": "onnx_int8",
    "deploy_float": "onnx_fp32",
    "engine_precision_int8": "int8",
    "engine_precision_float": "fp16",
    "on_device": _TRT_STEPS,
}
# JetPack 4.6 and 5.x ship Python 3.6 / 3.8, older than edgetl needs: the bundle's trtexec script builds there.
_TRTEXEC_ONLY_STEPS = (
    "copy the bundle directory to the device",
    "run the bundle's build_engine.sh (trtexec ships with JetPack); edgetl itself needs Python >= 3.10, which this "
    "JetPack does not have, so load model.engine from your application (C++ or TensorRT's Python bindings)",
)
_WEB_STEPS = (
    "serve the bundle directory over http(s): `edgetl serve BUNDLE_DIR` on this machine, or any static server "
    "(send COOP/COEP headers for multithreaded WebAssembly)",
    "open web/index.html: pick images or start the camera; everything runs in the tab",
    "in an app: import { loadClassifier } from './web/edgetl-web.mjs' and pass it onnxruntime-web",
)
_JETPACK_6 = "JetPack 6.x (L4T r36), CUDA 12.6, TensorRT 10.3, Python 3.10"

_TARGETS: dict[str, Target] = {
    "x86-cpu": Target(
        name="x86-cpu",
        description="x86-64 CPU with ONNX Runtime (CPUExecutionProvider)",
        **_ONNXRUNTIME,
        x86_cpu=True,
        software="ONNX Runtime >= 1.17",
        verified_here=True,
        notes="int8 uses QDQ with uint8 activations and per-channel int8 weights (MLAS u8s8 kernels).",
        verified=_VERIFIED_BUILD_MACHINE,
    ),
    "intel-cpu": Target(
        name="intel-cpu",
        description="Intel x86-64 CPU: ONNX Runtime and OpenVINO both measured, the faster one shipped",
        runtime="openvino",
        precisions=("fp32", "int8"),
        deploy_int8="openvino_int8",
        deploy_float="openvino_fp32",
        converts_to=("openvino",),
        deploy="fastest",
        x86_cpu=True,
        software="OpenVINO >= 2024 (pip install 'edgetl[openvino]') or ONNX Runtime >= 1.17, whichever won",
        on_device=(
            "pip install 'edgetl[openvino]'   # or the core install when the bundle holds an ONNX model",
            "edgetl predict BUNDLE_DIR image.jpg",
        ),
        verified_here=True,
        notes=(
            "OpenVINO runs the same validated Q/DQ int8 model as ONNX Runtime (converted to IR, fp32 weights "
            "kept, inference precision pinned to f32); which runtime is faster depends on the CPU, so the build "
            "measures both and ships the faster one that passes the accuracy checks."
        ),
        verified=_VERIFIED_BUILD_MACHINE,
    ),
    "android-arm64": Target(
        name="android-arm64",
        description="Android phone or arm64 Linux board with LiteRT (XNNPACK CPU delegate)",
        runtime="litert",
        precisions=("fp32", "int8"),
        deploy_int8="litert_int8",
        deploy_float="litert_fp32",
        converts_to=("litert",),
        software="LiteRT (com.google.ai.edge.litert on Android; ai-edge-litert on arm64 Linux)",
        on_device=(
            "copy the bundle's model.tflite, labels.txt and preprocessing.json into the app's assets",
            "resize/crop/normalise as preprocessing.json says; for an int8 model quantize the input with the "
            "input tensor's scale and zero point and dequantize the output",
            "on arm64 Linux: pip install 'edgetl[litert]' && edgetl predict BUNDLE_DIR image.jpg",
        ),
        notes=(
            "The build converts and measures the .tflite files on this x86 machine with the same interpreter "
            "(XNNPACK); latency on the phone is not measured here: run `edgetl bench BUNDLE` on an arm64 board "
            "or LiteRT's benchmark_model on the phone. Not run on Android or an Edge TPU here."
        ),
        verified=Verification(
            "arm64, emulated", _ARM64_EMULATED.format(device="phones or boards (LiteRT int8, XNNPACK)")
        ),
    ),
    "web": Target(
        name="web",
        description="Web browser with onnxruntime-web (WebAssembly SIMD; threads when cross-origin isolated)",
        **{**_ONNXRUNTIME, "runtime": "onnxruntime-web", "on_device": _WEB_STEPS},
        browser=True,
        software="a browser with WebAssembly SIMD (Chrome/Edge 91+, Firefox 89+, Safari 16.4+); onnxruntime-web "
        "(a copy ships in the bundle's web/ort/)",
        notes=(
            "The page decodes the image (EXIF orientation, sRGB, alpha over white) and hands uint8 RGB pixels to "
            "model_pixels.onnx, which resizes, crops and normalises in the graph. The build runs the shipped page in "
            "headless Chromium on the build machine: labels on every val image against `edgetl predict`, and the "
            "page's latency per WASM thread count (the build machine's browser, not the user's device). WebAssembly "
            "has no int8 dot-product instructions of the kind x86 VNNI or Arm dotprod give: int8 is smaller to "
            "download but may be slower than fp32 there; the report times every ONNX model that passed the budgets."
        ),
        verified=Verification(
            "run here, in Chromium",
            "the shipped page runs in headless Chromium on the build machine in every web build and in CI: labels "
            "agree with edgetl predict on every val image; not run in Firefox, Safari or a phone's browser",
        ),
    ),
    "raspberry-pi-5": Target(
        name="raspberry-pi-5",
        description="Raspberry Pi 5 (Cortex-A76, arm64) with ONNX Runtime",
        **_ONNXRUNTIME,
        device_memory_mb=4096,
        software="64-bit Raspberry Pi OS (bookworm), Python 3.11, onnxruntime arm64 wheel",
        notes=(
            "same QDQ int8 model as x86-cpu; the A76 has the dot-product instructions ORT's int8 kernels use. "
            "Latency in the report is from the build machine: measure on the Pi with `edgetl bench`."
        ),
        verified=Verification("arm64, emulated", _ARM64_EMULATED.format(device="Pis (ONNX Runtime int8)")),
    ),
    "nvidia-gpu": Target(
        name="nvidia-gpu",
        description="x86-64 with an NVIDIA GPU, TensorRT 10",
        **_TENSORRT,
        engine=EngineDefaults(tensorrt="10.3", workspace_mb=4096, max_batch=32, installed_tensorrt=True),
        software="CUDA 12, TensorRT 10.3-10.x or 11 (the installed one), pycuda",
        notes=(
            "int8 engines come from the explicit Q/DQ ONNX (no implicit calibrator); non-quantized layers "
            "may run in fp16. When the build machine has TensorRT, the engine is built and benchmarked "
            "during `edgetl build`."
        ),
        verified=_VERIFIED_TENSORRT,
    ),
    "jetson-orin-nano": Target(
        name="jetson-orin-nano",
        description="Jetson Orin Nano (Ampere, compute capability 8.7), JetPack 6 / TensorRT 10",
        **_TENSORRT,
        # 8 GB shared between CPU and GPU: keep the builder well below it.
        engine=EngineDefaults(tensorrt="10.3", workspace_mb=1024, max_batch=8),
        build_on_device=True,
        device_memory_mb=8192,
        software=_JETPACK_6,
        notes="Orin Nano has no DLA (Orin NX/AGX do: set tensorrt.dla_core there).",
        verified=_VERIFIED_TENSORRT,
    ),
    "jetson-agx-orin": Target(
        name="jetson-agx-orin",
        description="Jetson AGX Orin (Ampere, compute capability 8.7, 2 DLA cores), JetPack 6 / TensorRT 10",
        **_TENSORRT,
        engine=EngineDefaults(tensorrt="10.3", workspace_mb=4096, max_batch=32, dla_cores=2),
        build_on_device=True,
        device_memory_mb=32768,
        software=_JETPACK_6,
        notes="tensorrt.dla_core: 0 or 1 offloads to a DLA (fp16/int8 only) with GPU fallback for unsupported layers.",
        verified=_VERIFIED_TENSORRT,
    ),
    "jetson-xavier-nx": Target(
        name="jetson-xavier-nx",
        description="Jetson Xavier NX (Volta, compute capability 7.2, 2 DLA cores), JetPack 5.1 / TensorRT 8.5",
        **{**_TENSORRT, "on_device": _TRTEXEC_ONLY_STEPS},
        engine=EngineDefaults(tensorrt="8.5", workspace_mb=1024, max_batch=8, dla_cores=2),
        build_on_device=True,
        device_memory_mb=8192,
        software="JetPack 5.1.x (L4T r35), CUDA 11.4, TensorRT 8.5.2, Python 3.8",
        notes=(
            "TensorRT 8.5's parser reads ONNX up to opset 17, so the export is lowered from 18 and checked "
            "again against PyTorch; its trtexec has --memPoolSize but not --skipInference (--buildOnly). "
            "edgetl itself needs Python >= 3.10, which JetPack 5 does not have: build with the bundle's script."
        ),
        verified=_VERIFIED_TENSORRT,
    ),
    "jetson-nano": Target(
        name="jetson-nano",
        description="Jetson Nano (Maxwell, compute capability 5.3), JetPack 4.6 / TensorRT 8.2, fp16 only",
        runtime="tensorrt",
        precisions=("fp32", "fp16"),
        deploy_int8="onnx_int8",
        deploy_float="onnx_fp32",
        engine_precision_float="fp16",
        # 4 GB shared memory; a 256 MB workspace keeps engine builds from being OOM-killed.
        engine=EngineDefaults(tensorrt="8.2", workspace_mb=256, max_batch=4),
        build_on_device=True,
        device_memory_mb=4096,
        software="JetPack 4.6 (L4T r32.7), CUDA 10.2, TensorRT 8.2, Python 3.6",
        on_device=_TRTEXEC_ONLY_STEPS,
        notes=(
            "Maxwell has no int8 tensor cores: set optimize.int8.enabled: false. TensorRT 8.2 has no tensor-name "
            "API (8.5+), which `edgetl engine build` uses, so the bundle's trtexec script (--workspace, --buildOnly) "
            "is the supported path; its parser reads ONNX up to opset 13, so the export is lowered from 18."
        ),
        verified=_VERIFIED_TENSORRT,
    ),
}


def target_names() -> list[str]:
    return sorted(_TARGETS)


def unknown_target_message(name: str) -> str:
    return unknown_name_message("target", name, target_names())


def get_target(name: str) -> Target:
    try:
        return _TARGETS[name]
    except KeyError:
        raise ProfileError(unknown_target_message(name)) from None
