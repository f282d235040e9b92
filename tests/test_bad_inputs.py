"""Bad input found before the work, with a one-line error that names the right cause, and one exit-code
policy (gtr.commands.errors): 1 expected failure, 2 bad option, 130 interrupted, 141 closed pipe."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gtr
from cli_helpers import one_line_error, run
from gtr.runtime.bundle import read_bundle, write_bundle

GTR = [sys.executable, "-m", "gtr"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "mar-test.plan"
    gtr.export("mar-test", path, plans=["mar-4"], random_weights=True, log=None, verify=False)
    return path


def rewrite(src, dst, edit):
    """Copy a bundle with its manifest edited (members as they are)."""
    b = read_bundle(src)
    manifest = json.loads(json.dumps(b.manifest))
    members = {name: bytes(b.member(name)) for name in b.member_names}
    edit(manifest)
    manifest.pop("members", None)
    write_bundle(dst, manifest, members)
    return dst


def test_manifest_values_are_type_checked(bundle, tmp_path):
    bad = rewrite(bundle, tmp_path / "bad.plan", lambda m: m["config"].__setitem__("token_dim", "4"))
    line = one_line_error(run("inspect", bad))
    assert "bad model config" in line and "token_dim" in line and "must be int" in line
    bad = rewrite(bundle, tmp_path / "bad2.plan", lambda m: m["config"]["vae"].__setitem__("ch_mult", "abc"))
    assert "ch_mult" in one_line_error(run("run", bad, "-c", 1, "-o", tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_recorded_checkpoints_are_verified_when_the_reference_is_rebuilt(tmp_path):
    pytest.importorskip("torch")
    from safetensors.torch import save_file

    from gtr.export.weights import random_models
    from gtr.configs import get_config
    mar, vae = random_models(get_config("mar-test"), seed=3)
    ckpt, vae_file = tmp_path / "mar.safetensors", tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in mar.state_dict().items()}, ckpt)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, vae_file)
    path = gtr.export("mar-test", tmp_path / "t.plan", plans=["mar-4"], checkpoint=ckpt, vae=vae_file, log=None,
                      verify=False)
    mar2, _ = random_models(get_config("mar-test"), seed=4)  # same size, other weights, in the recorded place
    save_file({k: v.contiguous() for k, v in mar2.state_dict().items()}, ckpt)
    line = one_line_error(run("check", path))
    assert "not the file this bundle was exported from" in line and "sha256" in line


def test_outputs_are_checked_before_the_work(bundle, tmp_path):
    taken = tmp_path / "existing.png"
    taken.write_bytes(b"not a folder")
    for args, words in ((("-o", "/proc/x.png"), "cannot write"),
                        (("-o", taken / "x.png"), "is a file, not a folder"),
                        (("--outdir", taken / "sub"), "is a file, not a folder"),
                        (("--outdir", tmp_path / "d", "--npz", taken / "x.npz"), "is a file, not a folder")):
        t0 = time.perf_counter()
        r = run("run", bundle, "-c", 1, *args)
        assert words in one_line_error(r), args
        assert "wrote" not in r.output and time.perf_counter() - t0 < 30
    assert not (tmp_path / "d").exists() and sorted(os.listdir(tmp_path)) == ["existing.png"]
    line = one_line_error(run("export", "--model", "mar-test", "--random-weights", "-o", "/proc/x.plan"))
    assert "cannot write" in line
    assert "is a file" in one_line_error(run("plan", "show", "gtr", "--json", taken / "p.json"))


def test_a_failed_write_leaves_no_folders_behind(tmp_path):
    from gtr.runtime.files import atomic_write

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk gone")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a" / "b" / "c.png", boom)
    assert os.listdir(tmp_path) == []


def test_leftover_temp_files_of_a_dead_process_are_removed(tmp_path):
    from gtr.runtime.files import atomic_write_bytes
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale, mine = tmp_path / f".tmp-{pid}-0123abcd.npz", tmp_path / f".tmp-{os.getpid()}-feed.png"
    stale.write_bytes(b"x")
    mine.write_bytes(b"y")  # a live process's (ours): kept
    atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, "out.bin"])


def test_conflicting_and_impossible_options(bundle, tmp_path):
    r = run("export", "--model", "mar-test", "--random-weights", "--checkpoint", tmp_path / "x.pth")
    assert r.exit_code == 2 and "not both" in one_line_error(r)
    r = run("run", bundle, "-c", 1, "-n", 2, "--grid", "--outdir", tmp_path / "d")
    assert r.exit_code == 2 and "give one" in one_line_error(r)
    assert "must not exceed" in one_line_error(run("plan", "show", "mar-8", "--diffusion-steps-min", "200"))
    plan = tmp_path / "p.json"
    d = json.loads(gtr.plan.build_plan("mar-4", (16, 16)).to_json())
    d["steps"] = ["not a step"]
    plan.write_text(json.dumps(d))
    line = one_line_error(run("plan", "show", plan))
    assert "steps[0] must be an object" in line
    t0 = time.perf_counter()
    r = run("run", bundle, "-c", 3, "-n", 5000, "--grid", "-o", tmp_path / "x.png")
    assert "too big for one PNG" in one_line_error(r) and time.perf_counter() - t0 < 30


def test_one_exit_code_for_the_same_mistake(bundle, tmp_path):
    for cmd in (("run", bundle, "-c", 1, "--batch", 0), ("eval", "--batch", 0), ("run", bundle, "-c", 1, "-n", 0)):
        r = run(*cmd)
        assert r.exit_code == 2, (cmd, r.output)


def test_environment_mistakes_are_one_line(tmp_path):
    env = {**os.environ, "GTR_MIRROR": "notaurl", "GTR_HOME": str(tmp_path / "home")}
    r = subprocess.run(GTR + ["download", "kl16"], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "not an http(s) URL" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "file").write_text("x")
    for home, words in ((tmp_path / "file", "is a file, not a folder"), ("/proc/gtr-home", "cannot")):
        env = {**os.environ, "GTR_MIRROR": "http://127.0.0.1:9", "GTR_HOME": str(home)}
        r = subprocess.run(GTR + ["download", "kl16"], env=env, capture_output=True, text=True)
        assert r.returncode == 1 and words in r.stderr and "GTR_HOME" in r.stderr, r.stderr


def test_a_closed_pipe_ends_quietly(bundle):
    for args in (["plan", "show", "gtr"], ["inspect", str(bundle)]):
        p = subprocess.Popen(GTR + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The reader goes away before the command writes, as `| head -1` does once it has its line.
        # (Reading a line first raced: a short output can fit the pipe buffer and the command exit 0
        # before the close; it failed that way at times, before and after 2026-12-02.)
        p.stdout.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=60) == 141, err
        assert err == "", err


def long_run_under_way(bundle, out):
    """A 1,000-image gtr-run in a subprocess, once it has written its first image."""
    p = subprocess.Popen(GTR + ["run", str(bundle), "-c", "1", "-n", "1000", "--outdir", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("class*.png")) and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    return p


def finish(p, timeout=60):
    """(stdout, stderr) of a process told to stop; killed if it does not, so a failing test leaves no
    sampler running beside the rest of the suite."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise


def test_interrupt_exits_130_and_leaves_no_temp_files(bundle, tmp_path):
    out = tmp_path / "samples"
    p = long_run_under_way(bundle, out)
    p.send_signal(signal.SIGINT)
    _, err = finish(p)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


LOSES_INTERRUPTS = """
import sys, time
import click
from gtr.commands import errors
from gtr.runtime.files import atomic_write
errors.INTERRUPT_GRACE_S = float(sys.argv[1])

def write(f):
    print("ready", flush=True)
    while True:  # the signal's exception lost, the way Python loses one raised inside a finalizer
        try:
            time.sleep(0.05)
        except BaseException:
            pass

@click.command()
@errors.friendly_errors
def cmd():
    atomic_write(sys.argv[2] + "/image.png", write)  # interrupted while writing: a temp file is open

cmd([])
"""


@pytest.mark.parametrize("sig, grace, signals, code, message", [
    (signal.SIGINT, 1.0, 1, 130, "Error: interrupted"), (signal.SIGINT, 600.0, 2, 130, "Error: interrupted"),
    (signal.SIGTERM, 1.0, 1, 143, ""), (signal.SIGTERM, 600.0, 2, 143, "")])
def test_a_lost_interrupt_still_ends_the_command(sig, grace, signals, code, message, tmp_path):
    """Ctrl-C (SIGTERM) ends a command even when its exception is lost: after the grace period, or at
    once on a second signal; exit 130 with one line (143, quietly), and the file it was writing leaves
    no temp file."""
    p = subprocess.Popen([sys.executable, "-c", LOSES_INTERRUPTS, str(grace), str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # the write is under way
    t0 = time.perf_counter()
    for _ in range(signals):
        p.send_signal(sig)
        time.sleep(0.3)
    _, err = finish(p, timeout=30)
    assert p.returncode == code and err.strip() == message, err
    assert time.perf_counter() - t0 < 15
    assert os.listdir(tmp_path) == []


def test_check_reports_progress(bundle):
    pytest.importorskip("torch")
    r = run("check", bundle, "-c", 1)
    assert "building the PyTorch reference" in r.output and "sampling 1 image(s) on ONNX Runtime" in r.output


def test_sigterm_removes_temp_files_and_exits_143(bundle, tmp_path):
    out = tmp_path / "samples"
    p = long_run_under_way(bundle, out)
    p.terminate()
    finish(p)
    assert p.returncode == 143
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    assert Path(out / "gtr-run.json").is_file()


# ---- numbers without bounds, damaged run records, outputs that cannot be made, plan versions

def quick_refusal(*args, code=2):
    """The command refuses at once: exit `code`, one line, within seconds; returns the line."""
    t0 = time.perf_counter()
    r = run(*args)
    line = one_line_error(r)
    assert r.exit_code == code and time.perf_counter() - t0 < 10, (args, r.output)
    return line


def test_huge_counts_are_refused_by_their_bounds(bundle, tmp_path):
    out = tmp_path / "D"
    for extra in ((), ("--shard", "0/2")):
        line = quick_refusal("run", bundle, "-c", 3, "-n", "99999999999999999999", "--outdir", out, *extra)
        assert "'--num-images' / '-n'" in line and "an integer in 1..1000000000" in line
    assert "N must be an integer in 1..1000000" in quick_refusal("run", bundle, "-c", 3, "--outdir", out,
                                                                 "--shard", f"0/{10 ** 20}")
    line = quick_refusal("export", "--model", "mar-tiny", "--precision", "int8", "--calib-classes", "0-999999999999")
    assert "--calib-classes" in line and "2147483647" in line
    line = quick_refusal("export", "--model", "mar-tiny", "--precision", "int8", "--calib-classes", "0-999999")
    assert "more than 100,000 classes" in line
    for cmd in (("run", bundle, "-c", 1), ("check", bundle), ("eval", "--bundle", bundle), ("serve", bundle),
                ("bench", bundle)):
        assert "1..1024" in quick_refusal(*cmd, "--threads", 100000)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_floats_that_are_not_numbers_are_refused(bundle):
    for option in ("--max-wait-ms", "--timeout", "--read-timeout"):
        for value in ("nan", "inf", "-inf"):
            assert option in quick_refusal("serve", bundle, option, value)
    for option in ("--cfg", "--temperature"):
        assert "'nan' is not a number in" in quick_refusal("run", bundle, "-c", 1, option, "nan")
    assert "--fts-beta" in quick_refusal("plan", "show", "gtr", "--fts-beta", "nan")


def test_server_limits_from_python_are_checked_too(bundle):
    pytest.importorskip("fastapi")
    from serve_stub import StubPipe

    from gtr.inputs import InputError
    from gtr.serve import create_app
    for kwargs, words in ((dict(max_wait_ms=float("nan")), "max_wait_ms must be a number in [0, 60000]"),
                          (dict(timeout_s=float("inf")), "timeout_s"), (dict(queue=0), "queue"),
                          (dict(read_timeout_s=0), "read_timeout_s")):
        with pytest.raises(InputError, match=re.escape(words)):
            create_app(StubPipe(), warmup=False, **kwargs)


@pytest.mark.parametrize("content", [os.urandom(64), b'{"bundle": "abc", "se', b"[1, 2]", b'{"other": 1}',
                                     b'{"seed": NaN}', "{\"seed\": \"\u00e9\"}".encode("latin-1")])
def test_a_damaged_run_record_is_an_error_that_names_it(bundle, tmp_path, content):
    out = tmp_path / "D"
    out.mkdir()
    (out / "gtr-run.json").write_bytes(content)
    line = quick_refusal("run", bundle, "-c", 3, "--outdir", out, code=1)
    assert f"{out / 'gtr-run.json'}: " in line and "remove it, or use another folder" in line
    assert (out / "gtr-run.json").read_bytes() == content and os.listdir(out) == ["gtr-run.json"]


def test_output_folders_that_cannot_be_made_fail_before_sampling(bundle, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the bundle was loaded before the outputs were checked")
    monkeypatch.setattr("gtr.pipeline.Pipeline.__init__", no_work)
    long = "a" * 300  # longer than a file name may be (255 bytes on Linux filesystems)
    for args in (("-o", tmp_path / "sub" / long / "x.png"), ("--outdir", tmp_path / "sub" / long / "d"),
                 ("--outdir", tmp_path / "sub" / "d" / long), ("-o", tmp_path / "sub" / f"{long}.png")):
        line = quick_refusal("run", bundle, "-c", 1, *args, code=1)
        assert "cannot write" in line and "File name too long" in line, line
    assert os.listdir(tmp_path) == []


def test_a_version_1_plan_with_version_2_fields_is_refused(tmp_path):
    plan = json.loads(gtr.plan.build_plan("mar-8", (16, 16), cfg=3.0, cache_every=3).to_json())
    assert plan["version"] == 2 and any("cond" in s for s in plan["steps"])
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**plan, "version": 1}))
    assert "plan version 1 has no 'cond' field" in quick_refusal("plan", "show", path, code=1)
    path.write_text(json.dumps(plan))
    assert run("plan", "show", path).exit_code == 0
    path.write_bytes(b"\xff\xfe garbage")
    line = quick_refusal("plan", "show", path, code=1)
    assert f"plan file {path}: not a text file" in line


def test_python_names_are_written_as_flags_in_errors():
    line = quick_refusal("plan", "show", "gtr", "--gtr-steps", "1,2", code=1)
    assert "--gtr-steps" in line and "--stages" in line and "stage_steps" not in line and "num_stages" not in line


def test_every_command_offers_debug_and_run_names_its_default_output():
    from gtr.cli import main
    groups = [((), main)]
    while groups:
        path, group = groups.pop()
        assert "--debug" in run(*path, "--help").output, path
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                groups.append((path + (name,), cmd))
            else:
                assert "--debug" in run(*path, name, "--help").output, (path, name)
    assert "default: out.png" in " ".join(run("run", "--help").output.split())
