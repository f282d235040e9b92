"""Atomic writes (fsync before rename, umask untouched, errors name the user's path), mar-tiny's values
read from its JSON, and the head's coefficient columns defined once."""
import json
import os

import pytest

from gtr.configs import MARConfig
from gtr.runtime.files import atomic_write, atomic_write_bytes


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)  # a known umask for the test (set before os.umask is patched below)
    yield
    os.umask(old)


def test_atomic_write_fsyncs_before_rename_and_never_touches_the_umask(tmp_path, umask_027, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask changes the umask of every thread"))
    path = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(path, b"data")
    assert path.read_bytes() == b"data"
    assert events[:2] == ["fsync", "replace"]  # the data is on disk before the name points at it
    assert path.stat().st_mode & 0o777 == 0o640  # 0o666 less the umask, like open() would give
    assert os.listdir(path.parent) == ["a.bin"]


def test_atomic_write_errors_name_the_target_and_leave_no_temp_file(tmp_path):
    target = tmp_path / "out.png"
    target.mkdir()  # renaming a file onto a folder fails
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"x")
    assert info.value.filename == str(target)
    assert os.listdir(tmp_path) == ["out.png"]
    old = tmp_path / "keep.txt"
    old.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(old, lambda f: (f.write(b"half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert old.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["keep.txt", "out.png"]


def test_mar_tiny_reads_its_scale_factor_and_cfg_from_the_json(tmp_path):
    from gtr.tiny.model import JSON_FILE, MAR_TINY, read_info, shipped_values, tiny_config
    info = read_info()
    assert MAR_TINY.vae.scale_factor == info["config"]["vae"]["scale_factor"]
    assert MAR_TINY.default_cfg == info["config"]["default_cfg"]
    # A retrained model's JSON carries other values; the config follows with no code change.
    info["config"]["vae"]["scale_factor"], info["config"]["default_cfg"] = 0.5, 4.5
    (tmp_path / JSON_FILE).write_text(json.dumps(info))
    values = shipped_values(tmp_path)
    assert values == {"scale_factor": 0.5, "default_cfg": 4.5}
    assert tiny_config(**values) == MARConfig.from_dict(info["config"])


def test_coefficient_columns_are_defined_once():
    from gtr.export.onnx_export import io_specs
    from gtr.plan import COEF_NAMES, build_plan
    from gtr.runtime.sampler import COEF_COLUMNS, step_calls
    from gtr.tiny.model import MAR_TINY
    assert COEF_COLUMNS == COEF_NAMES + ("noise_scale",)
    coef = dict((n, s) for n, _, s in io_specs(MAR_TINY)["head"][0])["coef"]
    call = step_calls(build_plan("mar-4", MAR_TINY.grid), 0, 1).head[0]
    assert coef == ["r", len(COEF_COLUMNS)] and call.coef.shape == (call.rows, len(COEF_COLUMNS))


def test_load_bounds_threads_like_the_flag(tmp_path):
    """gtr.load(threads=N) takes the --threads range (1..1024) before it reads the bundle or makes a session."""
    import pytest
    import gtr
    from gtr.inputs import InputError
    for bad in (0, 100_000, float("nan"), 2.5):
        with pytest.raises(InputError, match="threads must be an integer in 1..1024"):
            gtr.load(tmp_path / "missing.plan", threads=bad)
