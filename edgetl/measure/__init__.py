"""Measuring: every number in a report comes from here, taken on this machine from the shipped files.

- `artifacts`: the harness (accuracy, interleaved latency, batch sweep, memory, compute) every caller uses;
- `latency`: timing with warm-up, interleaved rounds and percentiles;
- `compute`: MACs/parameters counted on the ONNX graph, the measured GEMM peak, utilization;
- `memory`: peak RSS of a fresh process per artefact;
- `rerun`: `edgetl bench RUN`, a finished run measured again and compared with a baseline report;
- `on_device`: `edgetl bench BUNDLE`, a device bundle measured on the device against its reference logits.
"""
