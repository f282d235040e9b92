"""gtr-check: a bundle against the PyTorch reference on the same noise."""
from __future__ import annotations


import time

import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import Int
from gtr.commands.threads import threads_option
from gtr.configs import check_classes


@click.command("check", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="MAR checkpoint (default: the one recorded at export).")
@click.option("--vae", type=click.Path(dir_okay=False), help="VAE checkpoint (default: the one recorded at export).")
@click.option("--plan", "plan_name", help="Plan to check (default: every plan in the bundle).")
@click.option("--class", "-c", "classes", type=Int(inputs.CLASS), multiple=True, help="Class ids (default: 0 and 1).")
@click.option("--seed", type=Int(inputs.SEED), default=0, show_default=True)
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="tensorrt: compare the bundle's TensorRT engines with onnxruntime and the reference (Polygraphy).")
@threads_option
@friendly_errors
def check_cmd(bundle, checkpoint, vae, plan_name, classes, seed, backend, threads):
    """Run the bundle and the PyTorch reference on the same seed and compare (needs torch).

    Prints the max token error (relative to the token scale), the image PSNR, and pass/fail against the
    tolerances of the bundle's precision (fp32: tokens <= 1e-3 relative and PSNR >= 40 dB; fp16: PSNR >= 30 dB;
    int8: PSNR >= 25 dB).
    """
    from gtr.extras import require
    require("gtr-check" + (" --backend tensorrt" if backend == "tensorrt" else ""), "export", "runtime",
            *(("tensorrt",) if backend == "tensorrt" else ()))
    from gtr.export.weights import bundle_models
    from gtr.runtime.bundle import read_bundle
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.models.reference import TorchComponents
    from gtr.runtime.fidelity import image_psnr, sample_passes, token_error
    from gtr.runtime.sampler import sample

    b = read_bundle(bundle)
    m, config = b.manifest, b.config
    t0 = time.perf_counter()
    click.echo(f"building the PyTorch reference of {config.name} (once) ...", err=True)
    mar, vae_model, _ = bundle_models(m, config, checkpoint, vae)
    t_build = time.perf_counter() - t0
    click.echo(f"built the reference in {t_build:.1f} s", err=True)
    labels = list(classes) or [c % config.num_classes for c in (0, 1)]
    check_classes(labels, config.num_classes)
    plans = b.plans()
    names = [plan_name] if plan_name else list(plans)
    ort_comps, torch_comps = OnnxComponents(b, threads=threads), TorchComponents(mar, vae_model)
    if backend == "tensorrt":  # engines vs onnxruntime and torch, by the same rule (gtr.runtime.fidelity)
        from gtr.engines.check import compare_backends
        from gtr.runtime.backends import make_components
        trt_comps = make_components(b, "tensorrt")
        runners = {"tensorrt": trt_comps, "onnxruntime": ort_comps, "torch": torch_comps}
        if not compare_backends(runners, [b.plan(n) for n in names], labels, seed, config, m["precision"],
                                echo=click.echo):
            raise click.ClickException("the TensorRT engines do not match onnxruntime and the reference within tolerance")
        return
    failed = False
    for name in names:
        plan = b.plan(name)
        kw = dict(token_dim=config.token_dim, num_classes=config.num_classes)
        click.echo(f"{name}: sampling {len(labels)} image(s) on ONNX Runtime ...", err=True)
        got, t_ort = _timed(sample, ort_comps, plan, labels, seed, **kw)
        click.echo(f"{name}: sampling the same on the PyTorch reference ({t_ort:.1f} s on ONNX Runtime) ...", err=True)
        ref, t_ref = _timed(sample, torch_comps, plan, labels, seed, **kw)
        token_err, psnr = token_error(got.tokens, ref.tokens), image_psnr(got.images, ref.images)
        ok = sample_passes(m["precision"], psnr, token_err)
        failed |= not ok
        click.echo(f"{name}: token max error {token_err:.2e} (relative), image PSNR {psnr:.1f} dB -> "
                   f"{'PASS' if ok else 'FAIL'} (ONNX Runtime {t_ort:.1f} s, PyTorch reference {t_ref:.1f} s)")
    click.echo(f"checked {len(names)} plan(s) in {time.perf_counter() - t0:.1f} s "
               f"(building the reference {t_build:.1f} s)")
    if failed:
        raise click.ClickException("the bundle does not match the reference within tolerance")


def _timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), its wall-clock seconds)."""
    t = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t
