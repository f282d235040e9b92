"""TensorRT engines for a bundle: building them (gtr-build) and checking them (gtr-check --backend tensorrt).

The runtime side (engine entries in the bundle, cache keys, profiles, the backend) lives in gtr.runtime;
this package adds what needs the TensorRT builder or the reference models. No torch at import time.
"""
