"""Every number a user can give, walked from the code itself (no hand-made list): each numeric option of
every command (introspected from the click group) and each numeric field of POST /v1/generate (from the
app's own schema) gets NaN, inf, -1, 0 and 10^20.

A value outside the option's documented range (its type's `range`, shown by --help) must fail at once:
exit status 2, one `Error` line that names the flag, no traceback, nothing written. A value inside it
(0 where 0 is allowed) must be accepted by the option. Over HTTP: 4xx outside the schema's range, 200
inside. A new numeric option without a range fails `test_every_numeric_option_has_a_range`.
"""
from __future__ import annotations

import json
import math
import os
import time

import click
import pytest
from click.testing import CliRunner

from gtr.cli import main

VALUES = ("nan", "inf", "-1", "0", str(10 ** 20))


def _commands(group=main, path=()):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def _numeric(param) -> bool:
    return isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)) \
        or hasattr(param.type, "range")


OPTIONS = [(path, cmd, p) for path, cmd in _commands() for p in cmd.params
           if isinstance(p, click.Option) and _numeric(p)]
IDS = [f"{' '.join(path)} {max(p.opts, key=len)}" for path, _, p in OPTIONS]


def _required(cmd, skip) -> list[str]:
    """Values for the command's required parameters (a bundle path, a model name), none of them read:
    every value under test is refused or accepted while the command line is parsed."""
    args = []
    for p in cmd.params:
        if p is skip or not p.required:
            continue
        value = "no-such.plan" if isinstance(p.type, click.Path) else "mar-test"
        args += [value] if isinstance(p, click.Argument) else [p.opts[0], value]
    return args


def _number(text: str):
    return float(text) if text in ("nan", "inf") else int(text)


def test_the_walk_finds_the_options():
    names = {(" ".join(path), max(p.opts, key=len)) for path, _, p in OPTIONS}
    for expected in [("run", "--num-images"), ("run", "--threads"), ("run", "--shard"), ("serve", "--timeout"),
                     ("serve", "--max-wait-ms"), ("export", "--calib-classes"), ("plan show", "--t-gen"),
                     ("check", "--threads"), ("eval", "--threads"), ("bench", "--batch"), ("build", "--workspace")]:
        assert expected in names, expected
    assert len(OPTIONS) > 60


@pytest.mark.parametrize("path,cmd,param", OPTIONS, ids=IDS)
def test_every_numeric_option_has_a_range(path, cmd, param):
    r = getattr(param.type, "range", None)
    assert r is not None, f"{' '.join(path)} {param.opts}: a number without a documented range (gtr.inputs)"
    assert math.isfinite(r.lo) and math.isfinite(r.hi) and r.lo <= r.hi


@pytest.mark.parametrize("path,cmd,param", OPTIONS, ids=IDS)
def test_numeric_options_take_only_their_range(path, cmd, param, tmp_path, monkeypatch):
    flag = param.opts[-1]
    for k, text in enumerate(VALUES):
        value = param.type.example(_number(text))
        args = [*path, *_required(cmd, param), flag, value]
        if param.type.range.holds(_number(text)):
            with cmd.make_context(path[-1], args[len(path):]) as ctx:  # parsed and converted, not run
                assert ctx.params[param.name] is not None, (args, ctx.params)
            continue
        t0 = time.perf_counter()
        cwd = tmp_path / str(k)
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        r = CliRunner().invoke(main, args)
        assert os.listdir(cwd) == [], (args, os.listdir(cwd))
        assert time.perf_counter() - t0 < 5, args
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.exit_code, r.output)
        errors = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and any(f"'{o}'" in errors[0] for o in param.opts), (args, r.output)


# ---- the server's request fields

def _fields():
    pytest.importorskip("fastapi")
    from gtr.serve.app import GenerateRequest
    props = GenerateRequest.model_json_schema(by_alias=True)["properties"]
    return sorted(name for name, p in props.items()
                  if {t.get("type") for t in p.get("anyOf", [p])} & {"integer", "number"})


def _in_schema(prop: dict, value) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if "integer" in {t.get("type") for t in prop.get("anyOf", [prop])} and not float(value).is_integer():
        return False
    ranges = prop.get("anyOf", [prop])
    return any(value >= t.get("minimum", -math.inf) and value > t.get("exclusiveMinimum", -math.inf)
               and value <= t.get("maximum", math.inf) for t in ranges if t.get("type") != "null")


def test_every_numeric_request_field_takes_only_its_range():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from serve_stub import StubPipe

    from gtr.serve import create_app
    with TestClient(create_app(StubPipe(), warmup=False)) as client:
        schema = client.get("/openapi.json").json()
        props = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        fields = _fields()
        assert {"class", "seed", "cfg", "temperature", "num_images"} <= set(fields)
        for field in fields:
            for text in ("NaN", "Infinity", "-1", "0", str(10 ** 20)):
                body = '{"class": 1, "%s": %s}' % (field, text)
                value = float(text) if text in ("NaN", "Infinity") else int(text)
                r = client.post("/v1/generate", content=body)
                if _in_schema(props["properties"][field], value):
                    assert r.status_code == 200, (body, r.status_code, r.text)
                else:
                    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
                    error = r.json()["error"]
                    assert "\n" not in error and (field in error or "JSON" in error), (body, error)
        assert client.post("/v1/generate", content=json.dumps({"class": 1, "plan": ""})).status_code == 422
