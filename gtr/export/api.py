"""gtr.export(...): what gtr-export does, for Python users (gtr-export calls this; needs torch).

    import gtr
    gtr.export("mar-tiny", "mar-tiny-fp32.plan", plans=["mar-64", "gtr"])
    gtr.export("mar-l", precision="fp16", download=True)     # fetches the official weights first
"""
from __future__ import annotations

import time
from pathlib import Path


def export(model: str, output=None, *, precision: str = "fp32", plans=None, checkpoint=None, vae=None,
           weights: str = "ema", random_weights: bool = False, download: bool = False, batch: int = 1,
           seed: int = 0, log=print, calibration=None, verify="spread", **plan_options) -> Path:
    """Export `model` (mar-b, mar-l, mar-h, mar-tiny, mar-test) into one .plan bundle; returns its path.

    output: default <model>-<precision>.plan. plans: names, mar-N or plan .json files (the first is
    the default of gtr-run); default gtr and mar-64 (gtr first). Weights: checkpoint / vae,
    else $GTR_HOME (download=True fetches the official files there first), or random_weights (seed).
    plan_options: the plan options of gtr-plan by their Python names (cfg, temperature, t_rec, ...).
    log: called with each progress line (None: quiet).
    calibration: int8 only, a gtr.calibration.CalibrationSpec (classes, seeds, method); default its defaults.
    verify: the check of each graph against torch on ONNX Runtime: "spread" (default: at most 8 evenly
    spaced static shapes plus the largest), "all" (every listed shape: most of an hour for MAR-H) or
    "none"; True / False mean "spread" / "none".
    """
    from gtr.configs import get_config
    from gtr.errors import ExportError
    from gtr.paths import cache_dir
    from gtr.plan.options import DEFAULT_PLANS, make_plans
    say = log or (lambda line: None)
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch must be an integer >= 1, got {batch!r}")
    if random_weights and (checkpoint is not None or vae is not None):
        raise ExportError("random_weights exports untrained weights: give it or checkpoint/vae, not both")
    from gtr.export.verify import check_mode
    verify = check_mode(verify)  # a bad value fails before any work
    config = get_config(model)
    if precision == "int8":  # validate the calibration request before loading weights
        from gtr.calibration import CalibrationSpec
        calibration = (calibration or CalibrationSpec()).resolve(config.num_classes)
    elif calibration is not None:
        raise ExportError("calibration options apply to --precision int8 only")
    plan_objs = make_plans(list(plans or DEFAULT_PLANS), config, plan_options)
    output = Path(output or f"{model}-{precision}.plan")
    from gtr.runtime.files import check_writable
    check_writable(output)  # before minutes of export
    if download and not random_weights:
        _download_missing(model, checkpoint, vae, cache_dir(), say)

    from gtr.export.exporter import export_bundle
    from gtr.export.weights import build_models
    t0 = time.perf_counter()
    mar, vae_model, sources = build_models(config, checkpoint=checkpoint, vae=vae, weights=weights,
                                           random_weights=random_weights, seed=seed)
    say(f"exporting {config.name} ({'RANDOM weights' if random_weights else sources.get('checkpoint', '')}) "
        f"at {precision}, plans: {', '.join(p.name for p in plan_objs)}, batch {batch}")
    summary = export_bundle(config, mar, vae_model, plan_objs, batch=batch, precision=precision, out_path=output,
                            random_weights=random_weights, sources=sources, log=say, calibration=calibration,
                            verify=verify)
    say(f"wrote {output} ({summary['size'] / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return output


def _download_missing(model, checkpoint, vae, home, say) -> None:
    """Fetch (or verify) the official files that no explicit path replaces."""
    from gtr.download import VAE, downloads, fetch
    wanted = {n for n, given in ((model, checkpoint), (VAE, vae)) if given is None}
    for d in downloads([model], home):
        if d.name in wanted:
            say(f"{d.name}: {fetch(d)} ({d.dest})")
