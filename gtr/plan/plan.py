"""The sampling plan: the shared vocabulary of every sampler in the toolkit (gtr-spec.md §2).

A plan fixes everything about a sampling run except the random draws: the position subsets (stages),
the AR steps with their token counts, the diffusion-step groups of each step, and the CFG/temperature
settings. The reference sampler, the exporter, the runtime and the cost model all read the same plan.

Plans are validated on construction, so an invalid SamplingPlan object cannot exist.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np
from gtr.errors import PlanError  # noqa: F401  (re-exported: defined with the other error types)
from gtr.inputs import CFG, GRID_SIDE, TEMPERATURE

ROLES = ("all", "fts_top", "fts_rest")
CFG_SCHEDULES = ("linear", "constant")
BASE_TIMESTEPS = 1000  # MAR's training process (mar-spec §7.1); a chain respaces it to T <= 1000 steps
FORMAT, VERSION = "gtr-plan", 2  # version 2: steps may carry a condition-cache mode ("cond")
# Condition cache (LazyMAR-style, docs/lazy.md): per AR step, "full" runs both CFG branches for the
# predicted positions; "refresh" runs both branches for every still-masked position and stores
# d = z_cond - z_uncond there; "cached" runs the conditional rows only, z_uncond = z_cond - stored d.
# Without CFG every step runs the conditional rows only and the modes have no effect.
COND_MODES = ("full", "refresh", "cached")
# FTS selection rules: highest score (GtR), lowest score, uniformly random (the paper's ablations).
FTS_SELECT = ("high", "low", "random")


def _int(x, what: str) -> int:
    # Accept Python and numpy integers (and integral floats from JSON-ish sources), nothing lossy.
    ok = not isinstance(x, bool) and isinstance(x, (int, np.integer, float, np.floating)) \
        and math.isfinite(x) and int(x) == x
    if not ok:
        raise PlanError(f"{what} must be an integer, got {x!r}")
    return int(x)


def _json_scalar(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"plan params must be JSON values, got {type(x).__name__}")


def _float(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise PlanError(f"{what} must be a number, got {x!r}")
    return float(x)


@dataclass(frozen=True)
class Group:
    """Tokens of one step that share a diffusion-step count T."""

    role: str  # 'all' | 'fts_top' | 'fts_rest'
    size: int  # tokens per sample
    T: int  # diffusion steps for these tokens

    def __str__(self) -> str:
        return f"{self.size}@{self.T}"


@dataclass(frozen=True)
class Step:
    """One AR step: a backbone pass, then one diffusion chain per group."""

    stage: int  # 0-based index into plan.stages
    known_before: int  # K_s: tokens known per sample before the step
    predict: int  # n_s: tokens predicted per sample
    groups: tuple[Group, ...]
    cfg_count: int  # u_s = min(K_s + n_s, L - 1), drives the linear CFG weight
    cond: str = "full"  # condition-cache mode: COND_MODES


@dataclass(frozen=True)
class SamplingPlan:
    name: str
    grid: tuple[int, int]
    stages: tuple[tuple[int, ...], ...]  # each in ascending position order
    steps: tuple[Step, ...]
    cfg: float = 1.0
    cfg_schedule: str = "linear"
    temperature: float = 1.0
    fts_beta: float = 0.0  # informational: the group sizes are authoritative
    fts_select: str = "high"  # which tokens fill an fts_top group: FTS_SELECT (ablations use low/random)
    params: dict = field(default_factory=dict)  # how the plan was built (builder name and kwargs)

    def __post_init__(self):
        # Normalise containers (lists from JSON, numpy ints) so equal plans compare equal.
        try:
            grid = tuple(_int(g, "grid entry") for g in self.grid)
            stages = tuple(tuple(_int(p, "position") for p in s) for s in self.stages)
            steps = tuple(
                Step(stage=_int(s.stage, "stage"), known_before=_int(s.known_before, "known_before"),
                     predict=_int(s.predict, "predict"),
                     groups=tuple(Group(str(g.role), _int(g.size, "group size"), _int(g.T, "group T"))
                                  for g in s.groups),
                     cfg_count=_int(s.cfg_count, "cfg_count"), cond=str(s.cond))
                for s in self.steps)
            # JSON-native copy (lists, not tuples; numpy scalars as Python numbers) so plans round-trip.
            params = json.loads(json.dumps(dict(self.params), default=_json_scalar))
        except (TypeError, AttributeError) as e:
            raise PlanError(f"malformed plan: {e}") from None
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "cfg", _float(self.cfg, "cfg"))
        object.__setattr__(self, "temperature", _float(self.temperature, "temperature"))
        object.__setattr__(self, "fts_beta", _float(self.fts_beta, "fts_beta"))
        object.__setattr__(self, "params", params)
        self.validate()

    def __hash__(self):
        # params is a dict (unhashable); leaving it out keeps equal plans hashing equal.
        return hash((self.name, self.grid, self.stages, self.steps, self.cfg, self.cfg_schedule,
                     self.temperature, self.fts_beta, self.fts_select))

    # ---- basic properties

    @property
    def seq_len(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def uses_cfg(self) -> bool:
        return self.cfg != 1.0

    @property
    def uses_fts(self) -> bool:
        return any(g.role != "all" for s in self.steps for g in s.groups)

    @property
    def uses_cond_cache(self) -> bool:
        """True when some step reuses a stored CFG difference (only in effect with CFG)."""
        return self.uses_cfg and any(s.cond == "cached" for s in self.steps)

    def cond_mode(self, step_index: int) -> str:
        """The condition-cache mode a step runs with: its own with CFG, "full" without (one branch)."""
        return self.steps[step_index].cond if self.uses_cfg else "full"

    def diffusion_Ts(self) -> list[int]:
        """Sorted distinct T of the non-empty groups: one respaced schedule each."""
        return sorted({g.T for s in self.steps for g in s.groups if g.size > 0})

    def cfg_weight(self, step_index: int) -> float:
        """Guidance weight w_s of a step (gtr-spec §2)."""
        if not self.uses_cfg:
            return 1.0
        if self.cfg_schedule == "constant":
            return self.cfg
        return 1.0 + (self.cfg - 1.0) * self.steps[step_index].cfg_count / self.seq_len

    # ---- validation (gtr-spec §2 "Validation")

    def validate(self) -> "SamplingPlan":
        def fail(msg):
            raise PlanError(f"plan {self.name!r}: {msg}")

        if not isinstance(self.name, str) or not self.name:
            fail("name must be a non-empty string")
        if len(self.grid) != 2 or not all(GRID_SIDE.holds(g) for g in self.grid):  # before grid-sized arrays
            fail(f"grid must be two positive integers of at most {GRID_SIDE.hi}, got {str(self.grid):.60}")
        L = self.seq_len

        # stages partition 0..L-1
        if not self.stages:
            fail("has no stages")
        seen = np.zeros(L, dtype=np.int64)
        for k, st in enumerate(self.stages):
            if not st:
                fail(f"stage {k} is empty")
            if any(b <= a for a, b in zip(st, st[1:])):
                fail(f"stage {k} positions must be strictly ascending")
            if st[0] < 0 or st[-1] >= L:
                fail(f"stage {k} has a position outside 0..{L - 1}")
            seen[list(st)] += 1
        if (seen > 1).any():
            fail(f"stages overlap: position {int(np.argmax(seen > 1))} is in more than one stage")
        if (seen == 0).any():
            fail(f"stages do not cover the grid: position {int(np.argmin(seen))} is in no stage")

        # scalar settings
        if not CFG.holds(self.cfg):
            fail(f"cfg must be >= 1 and at most {CFG.hi:g}, got {self.cfg}")
        if self.cfg_schedule not in CFG_SCHEDULES:
            fail(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {self.cfg_schedule!r}")
        if not TEMPERATURE.holds(self.temperature):
            fail(f"temperature must be > 0 and at most {TEMPERATURE.hi:g}, got {self.temperature}")
        if not 0.0 <= self.fts_beta <= 1.0:
            fail(f"fts_beta must be in [0, 1], got {self.fts_beta}")
        if self.fts_select not in FTS_SELECT:
            fail(f"fts_select must be one of {', '.join(FTS_SELECT)}, got {self.fts_select!r}")

        # steps: stages in order and contiguous, every stage has at least one step
        if not self.steps:
            fail("has no steps")
        stage_ids = [s.stage for s in self.steps]
        if stage_ids[0] != 0 or any(b not in (a, a + 1) for a, b in zip(stage_ids, stage_ids[1:])) \
                or stage_ids[-1] != len(self.stages) - 1:
            fail(f"steps must run through stages 0..{len(self.stages) - 1} in order, "
                 f"each with at least one step (got stage sequence {stage_ids})")

        known = 0
        per_stage = [0] * len(self.stages)
        last_uncached = None  # index of the latest step that ran the unconditional branch
        for i, s in enumerate(self.steps):
            where = f"step {i}"
            if s.cond not in COND_MODES:
                fail(f"{where}: cond must be one of {', '.join(COND_MODES)}, got {s.cond!r}")
            if s.cond == "cached":
                if last_uncached is None:
                    fail(f"{where}: a cached step needs a refresh step before it (nothing is stored yet)")
                if self.steps[last_uncached].cond != "refresh":
                    fail(f"{where}: cached, but the latest uncached step before it (step {last_uncached}) is "
                         f"'full', not 'refresh', so no CFG difference is stored for its positions")
            else:
                last_uncached = i
            if s.predict < 1:
                fail(f"{where}: predict must be >= 1, got {s.predict}")
            if s.known_before != known:
                fail(f"{where}: known_before = {s.known_before}, expected the running sum {known}")
            self._check_groups(s, fail, where)
            expected = min(known + s.predict, L - 1)
            if s.cfg_count != expected:
                fail(f"{where}: cfg_count = {s.cfg_count}, expected min(known_before + predict, L - 1) "
                     f"= {expected}")
            known += s.predict
            per_stage[s.stage] += s.predict
        for k, (got, st) in enumerate(zip(per_stage, self.stages)):
            if got != len(st):
                fail(f"stage {k}: steps predict {got} tokens, the stage has {len(st)} positions")
        return self

    @staticmethod
    def _check_groups(s: Step, fail, where: str):
        if not s.groups:
            fail(f"{where}: has no groups")
        roles = [g.role for g in s.groups]
        for g in s.groups:
            if g.role not in ROLES:
                fail(f"{where}: unknown group role {g.role!r} (roles: {', '.join(ROLES)})")
            if g.size < 0:
                fail(f"{where}: group size must be >= 0, got {g.size}")
            if not 1 <= g.T <= BASE_TIMESTEPS:
                fail(f"{where}: group T must be in 1..{BASE_TIMESTEPS} (the base diffusion process has "
                     f"{BASE_TIMESTEPS} steps), got {g.T}")
        if "all" in roles and len(roles) > 1:
            fail(f"{where}: role 'all' must be the only group, got roles {roles}")
        if "all" not in roles and roles not in (["fts_top"], ["fts_rest"], ["fts_top", "fts_rest"]):
            fail(f"{where}: FTS groups must be fts_top then fts_rest, each at most once, got {roles}")
        total = sum(g.size for g in s.groups)
        if total != s.predict:
            fail(f"{where}: group sizes sum to {total}, predict is {s.predict}")

    def replace(self, **changes) -> "SamplingPlan":
        """A copy with some fields changed (e.g. cfg, temperature), validated."""
        return dataclasses.replace(self, **changes)

    # ---- serialisation

    def to_dict(self) -> dict:
        def step(s):
            d = {"stage": s.stage, "known_before": s.known_before, "predict": s.predict, "cfg_count": s.cfg_count,
                 "groups": [{"role": g.role, "size": g.size, "T": g.T} for g in s.groups]}
            if s.cond != "full":
                d["cond"] = s.cond
            return d

        # Version 1 when no step uses the condition cache: such plans read as before, byte for byte,
        # and a toolkit that predates the cache refuses a plan that uses it instead of ignoring it.
        return {
            "format": FORMAT,
            "version": VERSION if any(s.cond != "full" for s in self.steps) else 1,
            "name": self.name,
            "grid": list(self.grid),
            "cfg": self.cfg,
            "cfg_schedule": self.cfg_schedule,
            "temperature": self.temperature,
            "fts_beta": self.fts_beta,
            "fts_select": self.fts_select,
            "params": self.params,
            "stages": [list(s) for s in self.stages],
            "steps": [step(s) for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingPlan":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise PlanError(f"not a sampling plan: format is {got!r}, expected {FORMAT!r}")
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise PlanError(f"bad plan version {version!r}")
        if version > VERSION:
            raise PlanError(f"plan version {version} is newer than this toolkit reads (up to {VERSION})")
        known = {"format", "version", "name", "grid", "cfg", "cfg_schedule", "temperature", "fts_beta",
                 "fts_select", "params", "stages", "steps"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlanError(f"unknown plan fields: {unknown}")
        for key in ("name", "grid", "stages", "steps"):
            if key not in d:
                raise PlanError(f"malformed plan: no {key!r} field")
        if not isinstance(d["steps"], list):
            raise PlanError("malformed plan: 'steps' must be a list of steps")
        step_keys, group_keys = ("stage", "known_before", "predict", "groups", "cfg_count"), ("role", "size", "T")
        for i, s in enumerate(d["steps"]):
            if not isinstance(s, dict) or any(k not in s for k in step_keys):
                raise PlanError(f"malformed plan: steps[{i}] must be an object with {', '.join(step_keys)}")
            extra = sorted(set(s) - set(step_keys) - {"cond"})
            if extra:
                raise PlanError(f"malformed plan: steps[{i}] has unknown fields {extra}")
            if not isinstance(s["groups"], list) or any(not isinstance(g, dict) or any(k not in g for k in group_keys)
                                                        for g in s["groups"]):
                raise PlanError(f"malformed plan: steps[{i}].groups must be a list of objects with "
                                f"{', '.join(group_keys)}")
        if version < 2 and any("cond" in s for s in d["steps"]):
            raise PlanError("plan version 1 has no 'cond' field (the condition cache came with version 2): "
                            "set \"version\": 2, or rewrite the plan with gtr-plan show --json")
        if d.get("params") is not None and not isinstance(d["params"], dict):
            raise PlanError("malformed plan: 'params' must be an object")
        try:
            steps = [Step(stage=s["stage"], known_before=s["known_before"], predict=s["predict"],
                          groups=tuple(Group(g["role"], g["size"], g["T"]) for g in s["groups"]),
                          cfg_count=s["cfg_count"], cond=s.get("cond", "full"))
                     for s in d["steps"]]
            return cls(name=d["name"], grid=d["grid"], stages=d["stages"], steps=steps,
                       cfg=d.get("cfg", 1.0), cfg_schedule=d.get("cfg_schedule", "linear"),
                       temperature=d.get("temperature", 1.0), fts_beta=d.get("fts_beta", 0.0),
                       fts_select=d.get("fts_select", "high"), params=d.get("params", {}))
        except (KeyError, TypeError) as e:
            raise PlanError(f"malformed plan: missing or bad field {e}") from None

    def to_json(self) -> str:
        """Stable JSON: one line per top-level field, one line per stage and per step."""
        d = self.to_dict()
        lines = []
        for key, value in d.items():
            if key in ("stages", "steps"):
                items = ",\n".join(f"    {json.dumps(v)}" for v in value)
                lines.append(f'  "{key}": [\n{items}\n  ]')
            else:
                lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
        return "{\n" + ",\n".join(lines) + "\n}\n"

    @classmethod
    def from_json(cls, text: str) -> "SamplingPlan":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"plan file is not valid JSON: {e}") from None
        return cls.from_dict(d)

    # ---- display

    def table(self) -> list[dict]:
        """Rows for printing, one per step. `stage` is 1-based here, as in the spec's tables."""
        return [
            {"step": i, "stage": s.stage + 1, "known": s.known_before, "predict": s.predict,
             "groups": "+".join(str(g) for g in s.groups if g.size > 0),
             "cfg_count": s.cfg_count, "cfg_weight": self.cfg_weight(i), "cond": self.cond_mode(i)}
            for i, s in enumerate(self.steps)
        ]

    def token_steps(self) -> int:
        """Diffusion token-steps per image and CFG branch (sum of size * T)."""
        return sum(g.size * g.T for s in self.steps for g in s.groups)
