"""ONNX graph code: the export from PyTorch, opset lowering, the pixels model (preprocessing in the graph), and
file helpers (metadata, checks, op census). `import onnx` inside this package is the onnx library.
"""
