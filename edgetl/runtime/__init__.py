"""Torch-free runtime: load a built model and classify images with its recorded preprocessing.

    from edgetl.runtime import load
    predictor = load("runs/quickstart")          # the deployed artefact (int8 on x86-cpu)
    predictor.predict(["bee.jpg"], top_k=2)

Only numpy, pillow and onnxruntime are needed.
"""

from edgetl.backends.base import Runner
from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner
from edgetl.runtime.predictor import MODEL_FILES, Prediction, Predictor, load, softmax

__all__ = ["MODEL_FILES", "OnnxRuntimeRunner", "Prediction", "Predictor", "Runner", "load", "softmax"]
