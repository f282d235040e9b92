"""Every TensorRT and cuda-python name gtr's code uses, read from its source (ast), and the check of each
against a real module. Used by tests/real_gpu/check_tensorrt.py inside the real packages' environment.

TensorRT names come in three forms:
  * `trt.A.B...` chains (module attributes, enum members): getattr along the real module;
  * `recv.m(...)` / `recv.attr` where `recv` is a variable (or `self.recv`) of a TensorRT object; which
    class a variable holds is the project's naming convention (RECEIVERS), and every assignment
    `name = recv.m(...)` in the code is checked against the return type that the real method's pybind11
    signature declares, so the convention cannot drift from what the objects are;
  * chained calls `recv.m(...).n`: `n` is looked up on m's declared return type.
Every call on a TensorRT object is checked for arity and keyword names against the signature too.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TENSORRT_FILES = sorted((ROOT / "gtr" / "runtime" / "trt").glob("*.py")) + [ROOT / "gtr" / "engines" / "build.py"]
CUDA_FILES = [ROOT / "gtr" / "runtime" / "trt" / "cuda.py"]

# Variable names that hold TensorRT objects in gtr's code, and their classes.
RECEIVERS = {"engine": "ICudaEngine", "ctx": "IExecutionContext", "builder": "Builder", "config": "IBuilderConfig",
             "parser": "OnnxParser", "prof": "IOptimizationProfile", "network": "INetworkDefinition",
             "runtime": "Runtime", "serialized": "IHostMemory"}
TRT_ROOTS = {"trt"}           # names (or self.<name>) of the tensorrt module
CUDA_ROOTS = {"rt", "_rt"}    # names (or self.<name>) of cuda-python's runtime module; also runtime()


def _root(node) -> str | None:
    """`x` for Name x and for self.x / eng.x / obj.x (one level)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr
    return None


def _chain(node) -> tuple[str | None, list[str]]:
    """For a.b.c: ("a", ["b", "c"]); self.trt.X counts as trt.X, and cuda.py's runtime().X as rt.X."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    names.reverse()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "runtime":
        return "rt", names
    root = node.id if isinstance(node, ast.Name) else None
    if root not in TRT_ROOTS | CUDA_ROOTS and names and names[0] in TRT_ROOTS | CUDA_ROOTS:
        root, names = names[0], names[1:]
    return root, names


def _positional(args) -> int:
    """How many positional arguments a call passes; -1 - the fixed ones where a *starred one may add more."""
    fixed = sum(not isinstance(a, ast.Starred) for a in args)
    return -1 - fixed if len(args) > fixed else fixed


class Uses:
    """What a source uses: module chains, (class, attribute) pairs, calls, typed assignments."""

    def __init__(self):
        self.trt_chains, self.cuda_chains = set(), set()
        self.members = {}      # (class, attr) -> first "file:line"
        self.calls = []        # (class, method, n positional, keywords, where)
        self.assigned = []     # (variable, class, method, where): variable = <class>.method(...)
        self.chained = []      # (class, method, attr, where): <class>.method(...).attr

    def scan(self, source: str, where: str) -> "Uses":
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                root, names = _chain(node)
                if root in TRT_ROOTS and names:
                    self.trt_chains.add(tuple(names))
                elif root in CUDA_ROOTS and names:
                    self.cuda_chains.add(tuple(names))
                recv = _root(node.value)
                if recv in RECEIVERS:
                    self.members.setdefault((RECEIVERS[recv], node.attr), f"{where}:{node.lineno}")
                if isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute):
                    inner = _root(node.value.func.value)
                    if inner in RECEIVERS:
                        self.chained.append((RECEIVERS[inner], node.value.func.attr, node.attr,
                                             f"{where}:{node.lineno}"))
            if isinstance(node, ast.Call):
                self._indirect(node, where)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                recv = _root(node.func.value)
                if recv in RECEIVERS:
                    self.calls.append((RECEIVERS[recv], node.func.attr, _positional(node.args),
                                       tuple(k.arg for k in node.keywords), f"{where}:{node.lineno}"))
                root, names = _chain(node.func)
                if root in TRT_ROOTS and len(names) == 1:  # trt.Class(...): its constructor
                    self.calls.append((names[0], "__init__", _positional(node.args), tuple(k.arg for k in node.keywords),
                                       f"{where}:{node.lineno}"))
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute):
                recv = _root(node.value.func.value)
                if recv in RECEIVERS and node.targets[0].id in RECEIVERS:
                    self.assigned.append((node.targets[0].id, RECEIVERS[recv], node.value.func.attr,
                                          f"{where}:{node.lineno}"))
        return self

    def _indirect(self, node: ast.Call, where: str) -> None:
        """getattr(trt.X, "Y", ...) and backend._call(what, recv.method, *args): names used without a dot."""
        func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        args = node.args
        if func == "getattr" and len(args) >= 2 and isinstance(args[1], ast.Constant):
            root, names = _chain(args[0]) if isinstance(args[0], ast.Attribute) else (_root(args[0]), [])
            if root in TRT_ROOTS:
                self.trt_chains.add((*names, args[1].value))
            elif root in CUDA_ROOTS:
                self.cuda_chains.add((*names, args[1].value))
        if func == "_call" and len(args) >= 2 and isinstance(args[1], ast.Attribute):
            recv = _root(args[1].value)
            if recv in RECEIVERS:
                self.calls.append((RECEIVERS[recv], args[1].attr, _positional(args[2:]),
                                   tuple(k.arg for k in node.keywords), f"{where}:{node.lineno}"))

    def scan_files(self, files) -> "Uses":
        for f in files:
            self.scan(Path(f).read_text(), Path(f).relative_to(ROOT).as_posix())
        return self


# ---- pybind11 signatures of the real module

_SIG = re.compile(r"^(?:\d+\.\s*)?(\w+)\((.*)\)\s*->\s*([\w.\[\], ]+)\s*$")


def signatures(obj) -> list[tuple[list[tuple[str, bool]], str]]:
    """[(params [(name, has_default)] without self, return type's last name)] of each overload in __doc__."""
    out = []
    for line in (getattr(obj, "__doc__", None) or "").splitlines():
        m = _SIG.match(line.strip())
        if not m:
            continue
        params = []
        depth, part, parts = 0, "", []
        for ch in m.group(2):  # split on commas outside brackets
            depth += ch in "[(" and 1 or 0
            depth -= ch in "])" and 1 or 0
            if ch == "," and depth == 0:
                parts.append(part)
                part = ""
            else:
                part += ch
        parts.append(part)
        for p in parts:
            p = p.strip()
            if not p or p.startswith("self") or p in ("*args", "**kwargs"):
                continue
            params.append((p.split(":")[0].strip(), "=" in p))
        out.append((params, m.group(3).strip().rsplit(".", 1)[-1]))
    return out


def call_fits(params, n_positional: int, keywords) -> bool:
    names = [p for p, _ in params]
    if n_positional < 0:  # f(a, *rest): only a lower bound is known
        return -1 - n_positional <= len(params)
    if n_positional > len(params) or any(k not in names[n_positional:] for k in keywords if k):
        return False
    given = set(names[:n_positional]) | set(keywords)
    return all(has_default or name in given for name, has_default in params)


def check_tensorrt(trt, uses: Uses) -> list[str]:
    """Every problem of `uses` against the real tensorrt module, one line each (empty: all there)."""
    problems = [f"trt.{chain} does not exist in TensorRT {trt.__version__}"
                for chain in missing_chains(trt, uses.trt_chains)]
    for (cls, attr), where in sorted(uses.members.items()):
        if not hasattr(getattr(trt, cls), attr):
            problems.append(f"{where}: {cls}.{attr} does not exist in TensorRT {trt.__version__}")
    for cls, method, n, keywords, where in uses.calls:
        target = getattr(getattr(trt, cls, None), method, None)
        sigs = signatures(target) if target is not None else []
        if target is not None and sigs and not any(call_fits(p, n, keywords) for p, _ in sigs):
            problems.append(f"{where}: {cls}.{method} takes no call with {n} positional argument(s) and keywords "
                            f"{list(keywords)} in TensorRT {trt.__version__}")
    for var, cls, method, where in uses.assigned:
        returns = {r for _, r in signatures(getattr(getattr(trt, cls), method, None))}
        if returns and RECEIVERS[var] not in returns:
            problems.append(f"{where}: {var} = {cls}.{method}(...) holds a {'/'.join(sorted(returns))}, "
                            f"not a {RECEIVERS[var]}")
    for cls, method, attr, where in uses.chained:
        returns = {r for _, r in signatures(getattr(getattr(trt, cls), method, None))}
        for r in returns:
            if hasattr(trt, r) and not hasattr(getattr(trt, r), attr):
                problems.append(f"{where}: {cls}.{method}(...).{attr}: {r}.{attr} does not exist")
    return problems


def missing_chains(root, chains) -> list[str]:
    """The first missing prefix (dotted) of each attribute chain under `root`, in sorted order."""
    missing = []
    for chain in sorted(chains):
        obj = root
        for i, name in enumerate(chain):
            if not hasattr(obj, name):
                missing.append(".".join(chain[:i + 1]))
                break
            obj = getattr(obj, name)
    return missing


def check_cuda(rt, uses: Uses) -> list[str]:
    return [f"{chain} does not exist in {rt.__name__}" for chain in missing_chains(rt, uses.cuda_chains)]
