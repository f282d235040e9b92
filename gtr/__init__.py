"""gtr: deploy MAR image generators with GtR two-stage sampling and FTS.

Subpackages: `plan` (numpy: schedules, sampling plans, FTS, cost model), `models` (PyTorch reference),
`export` (torch -> ONNX -> bundle), `calibration` (INT8, planned), `runtime` (numpy + onnxruntime sampler).
"""
__version__ = "0.1.0"
