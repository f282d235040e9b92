"""A stand-in of the TensorRT builder side (gtr-build) for tests/test_tensorrt_engines.py: a builder that
"builds" placeholder bytes, configs that record what was set, a runtime that loads any engine bytes but
damaged ones. Every public name here exists on the real class (tests/real_gpu/check_tensorrt.py).
"""
from __future__ import annotations

import types

from trt_fakes import Logger, _Enum

class StubConfig:
    """IBuilderConfig as far as gtr.engines.build uses it; records the flags cleared and the profiles."""

    def __init__(self):
        self.cleared, self.profiles = [], []

    def clear_flag(self, flag):
        self.cleared.append(flag)

    def set_memory_pool_limit(self, pool, size):
        pass

    def create_timing_cache(self, data):
        return object()

    def set_timing_cache(self, cache, ignore_mismatch):
        return True

    def get_timing_cache(self):
        return types.SimpleNamespace(serialize=lambda: b"cache")

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1


class StubNetwork:
    def __init__(self, names):
        self.names = names
        self.num_inputs = len(names)

    def get_input(self, i):
        return types.SimpleNamespace(name=self.names[i])


class StubProfile:
    def set_shape(self, name, lo, opt, hi):
        pass


def stub_builder_tensorrt(inputs=(), version: str = "10.8.0.43"):
    """A `tensorrt` stand-in for gtr-build: a builder that 'builds' b"serialized" for a network with
    `inputs`, configs recorded in `.configs`, flags passed to create_network in `.network_flags`, and a
    runtime that loads any engine bytes except those starting with b"damaged"."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.configs, trt.network_flags = [], []
    trt.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=0)
    trt.BuilderFlag = _Enum(TF32="TF32")
    trt.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.network_flags.append(flags)
            return StubNetwork(list(inputs))

        def create_builder_config(self):
            trt.configs.append(StubConfig())
            return trt.configs[-1]

        def create_optimization_profile(self):
            return StubProfile()

        def build_serialized_network(self, network, config):
            return b"serialized"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return None if bytes(data).startswith(b"damaged") else object()

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


# Which real class each stand-in stands for; attributes that are test knobs, not TensorRT's.
REAL_CLASSES = {"StubConfig": "IBuilderConfig", "StubNetwork": "INetworkDefinition",
                "StubProfile": "IOptimizationProfile"}
KNOBS = {"configs", "network_flags"}
