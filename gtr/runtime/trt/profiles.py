"""TensorRT optimization profiles from the static shapes a bundle's manifest lists. Standard library only.

Each graph entry of the manifest holds its inputs with symbolic dims (backbone tokens [B,K,c], head
x [r,c] and z [r2,D], ...) and `static_shapes`, every value of those symbols the bundle's plans run at
(gtr.export.exporter.static_shapes). A profile gives each symbol a min, opt and max; an input's
min/opt/max dims follow by putting the symbols into its shape.

One profile per static shape (min = opt = max) while a component has at most `max_profiles` of them:
every call then runs kernels chosen for its exact shape, and a context never changes shape, which is
what lets the head loop be captured in a CUDA graph. Above that (the backbone of mar-64 has 64 shapes,
of mar-256 256) build time and engine size grow with every profile, so the shapes are grouped: sorted
by their symbol values (the backbone's by B, then K, then n: consecutive AR steps), cut into
`max_profiles` runs of consecutive shapes of near-equal length, and each run becomes one profile whose
min and max span the run and whose opt is the run's middle shape, an exact shape of the plan.

Shapes with an empty dimension (the backbone's first AR step has K = 0 visible tokens) always get their
own exact profile, outside every range: an empty MatMul input, or int8 Q/DQ on an empty tensor, is a
corner case kernels chosen for K = 1..n need not handle, and an exact profile builds it on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_PROFILES = 16


@dataclass(frozen=True)
class Profile:
    """min / opt / max value of every symbol of one graph, e.g. {"B": 2, "K": 0, "n": 4}."""
    min: dict
    opt: dict
    max: dict

    @property
    def exact(self) -> bool:
        return self.min == self.max

    def covers(self, symbols: dict) -> bool:
        return all(k in symbols and self.min[k] <= symbols[k] <= self.max[k] for k in self.min)

    def to_dict(self) -> dict:
        return {"min": dict(self.min), "opt": dict(self.opt), "max": dict(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        """From `to_dict`'s form; ValueError unless min, opt and max map the same symbols to integers."""
        parts = [dict(d[k]) for k in ("min", "opt", "max")]
        if any(p.keys() != parts[0].keys() or not all(isinstance(v, int) and not isinstance(v, bool)
                                                      for v in p.values()) for p in parts):
            raise ValueError(f"malformed profile {d!r}")
        return cls(*parts)

    def describe(self) -> str:
        def fmt(s):
            return " ".join(f"{k}={v}" for k, v in s.items())
        if self.exact:
            return f"exact {fmt(self.opt)}"
        return f"min {fmt(self.min)} | opt {fmt(self.opt)} | max {fmt(self.max)}"


def _unique(shapes) -> list[dict]:
    seen, out = set(), []
    for s in shapes:
        key = tuple(sorted(s.items()))
        if key not in seen:
            seen.add(key)
            out.append(dict(s))
    return out


def derive_profiles(static_shapes, max_profiles: int = MAX_PROFILES) -> list[Profile]:
    """The optimization profiles of one graph (see the module docstring); every shape is covered."""
    if max_profiles < 1:
        raise ValueError(f"max_profiles must be >= 1, got {max_profiles}")
    shapes = _unique(static_shapes)
    if len(shapes) <= max_profiles:
        return [Profile(s, s, s) for s in shapes]
    empty = [s for s in shapes if 0 in s.values()]
    profiles = [Profile(s, s, s) for s in empty]
    shapes = [s for s in shapes if 0 not in s.values()]
    if not shapes:
        return profiles
    runs = min(len(shapes), max(1, max_profiles - len(empty)))
    keys = list(shapes[0])
    ordered = sorted(shapes, key=lambda s: tuple(s[k] for k in keys))
    size, extra = divmod(len(ordered), runs)
    start = 0
    for i in range(runs):
        run = ordered[start:start + size + (i < extra)]
        start += len(run)
        profiles.append(Profile({k: min(s[k] for s in run) for k in keys}, dict(run[len(run) // 2]),
                                {k: max(s[k] for s in run) for k in keys}))
    return profiles


def input_dims(inputs, symbols: dict) -> dict[str, tuple[int, ...]]:
    """{input name: concrete dims} of a graph's manifest inputs ([{"name", "shape"}]) at symbol values."""
    return {i["name"]: tuple(int(symbols[d]) if isinstance(d, str) else int(d) for d in i["shape"])
            for i in inputs}


def profile_dims(inputs, profile: Profile) -> dict[str, tuple[tuple, tuple, tuple]]:
    """{input name: (min dims, opt dims, max dims)}: what IOptimizationProfile.set_shape takes."""
    lo, opt, hi = (input_dims(inputs, s) for s in (profile.min, profile.opt, profile.max))
    return {name: (lo[name], opt[name], hi[name]) for name in lo}
