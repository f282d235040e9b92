"""Run a snippet in a fresh interpreter where torch, onnx and safetensors cannot be imported."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKED = ("torch", "onnx", "torchvision", "safetensors")
_PRELUDE = textwrap.dedent(f"""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError("blocked for this test: " + name)
    sys.meta_path.insert(0, _Block())
""")
_EPILOGUE = textwrap.dedent("""
    _bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx"))
    assert not _bad, _bad
    print("ok")
""")


def run_without_torch(code: str, timeout: int = 300) -> None:
    """Run `code` (dedented) with the blockers in place; assert it ran and imported no torch or onnx."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code) + _EPILOGUE],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
