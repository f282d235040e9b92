"""gtr: deploy MAR image generators with GtR two-stage sampling and FTS.

    import gtr
    pipe = gtr.load("mar-tiny-fp32.plan")                # numpy + onnxruntime, no torch
    pipe([3, 5], seed=0)[0].save("three.png")            # a list of PIL images, class-major
    gtr.export("mar-tiny", "mar-tiny-fp32.plan")         # what gtr-export does (needs torch)

Subpackages: `plan` (numpy: schedules, sampling plans, FTS, cost model), `models` (PyTorch reference),
`export` (torch -> ONNX -> bundle), `runtime` (numpy + onnxruntime sampler); `pipeline` (gtr.load),
`download` (official weights).
"""
import types as _types

from gtr._version import __version__


def load(path, device: str = "auto", backend: str = "auto", threads: int | None = None, rebuild: bool = False):
    """Open a .plan bundle as a `gtr.pipeline.Pipeline` (torch is not needed); `with gtr.load(p) as pipe:`
    frees its sessions and device memory at the end. Errors are gtr.errors.GtrError subclasses."""
    from gtr.pipeline import load as _load
    return _load(path, device=device, backend=backend, threads=threads, rebuild=rebuild)


class _CallableExport(_types.ModuleType):
    """`gtr.export` is the export subpackage, and calling it exports a model (gtr.export.api.export):
    one name can hold one object, so the package module itself is made callable."""

    def __call__(self, *args, **kwargs):
        from gtr.extras import require
        require("gtr.export()", "export", "runtime")  # not installed: one line with the pip command
        from gtr.export.api import export
        return export(*args, **kwargs)


from gtr import export  # noqa: E402  (cheap: the subpackage loads its torch modules lazily)

export.__class__ = _CallableExport
