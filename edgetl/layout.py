"""Every file name of a run directory and of a device bundle, in one place.

A run directory is what `edgetl build` publishes; stages write the same relative paths into their
cache folders, and readers (`edgetl predict`, `edgetl bench`, the report, older run directories)
find files by these names. Changing one breaks every earlier run directory, so they live here and
nowhere else. This module imports nothing: devices read it too.

Which artefact lives in which file is the backend catalogue's business (`edgetl.backends`): each
artefact names its file from the constants below.
"""

from __future__ import annotations

# --- run directory --------------------------------------------------------------------------------
MANIFEST = "manifest.json"  # written last: the build's commit point
# edgetl's own state (stage cache, work folders, the lock); its presence marks a folder as a run directory.
STATE_DIR = ".edgetl"
PROFILE_COPY = "profile.yaml"
LABELS = "labels.txt"
PREPROCESSING = "preprocessing.json"

SPLIT = "data/split.json"
DATA_CHECK = "data/check.json"

CHECKPOINT = "models/model.pt"
ONNX_FP32 = "models/model_fp32.onnx"
ONNX_FP16 = "models/model_fp16.onnx"
ONNX_INT8 = "models/model_int8.onnx"
OPENVINO_DIR = "models/openvino"  # one IR (.xml + .bin) per precision
LITERT_DIR = "models/litert"  # one .tflite per precision
EXECUTORCH_DIR = "models/executorch"  # one .pte per precision

TRAINING_HISTORY = "training/history.json"
TRAINING_HISTORY_CSV = "training/history.csv"
TRAINING_CURVES = "training/curves.png"
# `strategy: auto`'s two candidates (one of them is the kept model), so its choice can be re-examined.
AUTO_CANDIDATES = {"probe": "training/candidates/probe.pt", "finetune": "training/candidates/finetune.pt"}

EXPORT_PARITY = "export/parity.json"
QUANTIZATION = "optimize/quantization.json"
CALIBRATION = "optimize/calibration.json"
CONVERSIONS = "convert/conversions.json"

BENCHMARK_RESULTS = "benchmark/results.json"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REPORT_PLOTS_DIR = "report"
RERUN_DIR = "bench"  # `edgetl bench RUN` writes its new measurements here, never over the build's report

BUNDLE_DIR = "bundle"

# --- device bundle (relative to the bundle folder) ------------------------------------------------
BUNDLE_INFO = "bundle.json"
BUNDLE_MODEL = "model.onnx"
BUNDLE_ENGINE = "model.engine"
BUNDLE_PIXELS_MODEL = "model_pixels.onnx"  # the same model with preprocessing in the graph (uint8 pixels in)
BUNDLE_TIMING_CACHE = "timing.cache"
BUNDLE_LABELS = LABELS
BUNDLE_PREPROCESSING = PREPROCESSING
BUNDLE_REFERENCE_DIR = "reference"
BUNDLE_REFERENCE = "reference/reference.json"
BUNDLE_REFERENCE_INPUTS = "reference/inputs.npy"  # the preprocessed reference images, exactly as the model got them
BUNDLE_REFERENCE_LOGITS = "reference/logits.npy"  # what the shipped model gave for them on the build machine
BUNDLE_REFERENCE_PIXELS_LOGITS = "reference/pixels_logits.npy"  # model_pixels.onnx on the decoded reference images
BUNDLE_BUILD_SCRIPT = "build_engine.sh"
BUNDLE_README = "README.md"
BUNDLE_BENCH_DIR = "bench"  # `edgetl bench BUNDLE` on the device
BUNDLE_BENCH_JSON = "bench.json"
BUNDLE_BENCH_MD = "bench.md"
BUNDLE_CANDIDATES_DIR = "candidates"  # the other models a device may choose between (`edgetl bench BUNDLE --select`)
DEVICE_DIR = "device"  # the bundle measured on the device over SSH (profile `on_device:`): bench.json, bench.md
BUNDLE_DEVICE_CHOICE = "device.json"  # written on the device by `edgetl bench BUNDLE --select`: the model it chose
BUNDLE_WEB_DIR = "web"  # the web target's page and JavaScript module (model_pixels.onnx in onnxruntime-web)
BUNDLE_WEB_PAGE = "index.html"
BUNDLE_WEB_RUNTIME = "runtime.json"  # in web/: where the page loads onnxruntime-web from, and its version
BUNDLE_WEB_ORT_DIR = "ort"  # in web/: the bundle's own copy of onnxruntime-web (WASM build), when the build had one
BROWSER_DIR = "browser"  # the web bundle checked and timed in headless Chromium on the build machine
BROWSER_RESULTS = "browser.json"

# A TensorRT engine built into the run's bundle (during the build, or later on the device).
ENGINE = f"{BUNDLE_DIR}/{BUNDLE_ENGINE}"
# ONNX metadata keys of every exported model: a bare .onnx carries its labels and preprocessing.
METADATA_LABELS = "edgetl.labels"
METADATA_PREPROCESSING = "edgetl.preprocessing"
INPUT_NAME = "input"  # the ONNX graph input every exported model has
