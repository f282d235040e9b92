"""The project's error types, in one leaf module (stdlib only) that every layer can import.

Each is a one-line message about something the user can fix (bad input, a missing or damaged file,
a missing install); the command line prints it as `Error: ...` with exit status 1. Anything that is
not a `GtrError` is a bug in gtr. The Python API (`gtr.load`, `gtr.export`) raises only these.
"""
from __future__ import annotations


class GtrError(Exception):
    """Base of every expected failure of gtr; str() is the one-line message."""


class ConfigError(GtrError, KeyError):
    """An unknown model name (a KeyError, so existing `except KeyError` callers keep working)."""

    def __str__(self):  # KeyError's str() quotes its message
        return str(self.args[0]) if self.args else ""


class PlanError(GtrError, ValueError):
    """An invalid plan, plan file or builder argument."""


class BundleError(GtrError):
    """A missing, foreign, damaged or unsupported bundle file."""


class EngineError(GtrError):
    """TensorRT missing or unusable, or engines that do not fit this machine or bundle."""


class CudaError(GtrError, RuntimeError):
    """A CUDA runtime call failed, or cuda-python / a GPU is missing."""


class PipelineError(GtrError):
    """A request the pipeline cannot run (unknown plan, bad class, device, shard, folder)."""


class DeviceError(PipelineError):
    """A device, backend or execution provider that this install cannot use (e.g. cuda with CPU onnxruntime)."""


class CheckpointError(GtrError):
    """A checkpoint that cannot be loaded as asked, or weights that cannot be found."""


class ExportError(GtrError):
    """An export that cannot be done or did not pass its checks."""


class CalibrationError(GtrError):
    """A calibration request that cannot be run or did not cover what the bundle needs."""


class DownloadError(GtrError):
    """A download that could not be done or checked; the message says what to do."""


class EvalError(GtrError, ValueError):
    """An evaluation that cannot be done as asked (e.g. a model the digit classifier cannot score)."""


class OfficialError(GtrError):
    """The official MAR checkout cannot be imported or cannot run this plan."""


class MissingExtra(GtrError, ImportError):
    """Something needs an optional part of gtr that is not installed; the message gives the pip command."""


class UnknownPlanError(PlanError, PipelineError):
    """A plan name that the bundle does not hold."""


def first_line(e: BaseException) -> str:
    """An exception's message as one line (its first), for errors that wrap another library's."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str() adds quotes
    lines = text.strip().splitlines()
    return lines[0] if lines else type(e).__name__


class RequestError(PipelineError, ValueError):
    """A value of a request that the model or the bundle cannot take (a class out of range)."""


class PathError(GtrError):
    """An output path or folder that cannot be written (a file where a folder must be, no permission)."""
