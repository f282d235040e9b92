"""Fewer head calls per image: the runtime's head loop with and without its chain graph
(gtr.export.head_chain: `steps` diffusion steps in one graph call), side by side.

    python benchmarks/head_chain_cpu.py BUNDLE [BUNDLE ...] [--plan gtr] [--batch 1,8] [--rounds 7]
        [--form unrolled|loop] [--steps 10] [--max-rows 16] [--threads 1]

The chain graph is made here from the bundle's head-step graph, whatever the bundle holds (so fp16 and
int8 bundles, which are exported without one, can be measured too), reading the same weights:
`unrolled` is the exported form (gtr.export.head_chain); `loop` is an ONNX Loop whose body is the step
graph, run for the same `steps` iterations per call.

For every AR step of the plan (built for the bundle's grid, CFG 3) the runtime's head loop
(OnnxComponents.diffuse, with its row shards) runs on random inputs two ways, interleaved AR step by AR
step in alternating order: "step", one call per diffusion step and shard (the chain switched off), and
"chain", each run of `steps` calls of equal rows (up to --max-rows a shard) as one chain call. Checks
that both give the same bits, then prints one JSON line per bundle and batch: seconds of one image's
head loops each way (median and best round; CPU seconds on one thread, which other processes disturb
less than wall time, else wall time) and step / chain (above 1: the chain is faster).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from gtr.export.head_chain import CHAIN_STEPS, chain_proto
from gtr.plan import build_plan
from gtr.runtime import onnx_backend
from gtr.runtime.bundle import read_bundle
from gtr.runtime.head_inputs import CHAIN_OUTPUT as OUT, CHAIN_SEQ_INPUTS as SEQ
from gtr.runtime.sampler import step_calls


def loop_proto(step_proto) -> bytes:
    """The Loop form of the chain: an ONNX Loop whose body is the step graph (trip count from t_seq's
    shape); the body reads the step graph's initializers from the outer graph. Same inputs and output
    as gtr.export.head_chain's unrolled form, whose stacked axis is static."""
    import onnx
    from onnx import TensorProto, helper

    step = onnx.load_from_string(bytes(step_proto))
    g = step.graph
    inputs = {i.name: i for i in g.input}
    local = {o for n in g.node for o in n.output}
    names = {"x": "/body/x"}
    nodes = []
    for name, seq in SEQ.items():
        names[name] = f"/body/{name}"
        nodes.append(helper.make_node("Gather", [seq, "/body/iteration"], [names[name]], axis=0))
    for node in g.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.input[:] = [names.get(i, f"/body/{i}" if i in local else i) for i in n.input]
        n.output[:] = [f"/body/{o}" for o in n.output]
        nodes.append(n)
    nodes.append(helper.make_node("Identity", ["/body/cond_in"], ["/body/cond_out"]))
    x_type = inputs["x"].type
    body = helper.make_graph(
        nodes, "head_step",
        [helper.make_tensor_value_info("/body/iteration", TensorProto.INT64, []),
         helper.make_tensor_value_info("/body/cond_in", TensorProto.BOOL, []),
         helper.make_value_info("/body/x", x_type)],
        [helper.make_tensor_value_info("/body/cond_out", TensorProto.BOOL, []),
         helper.make_value_info(f"/body/{g.output[0].name}", x_type)])
    outer = [helper.make_node("Shape", ["t_seq"], ["/chain/shape"]),
             helper.make_node("Gather", ["/chain/shape", "/chain/zero"], ["/chain/n"], axis=0),
             helper.make_node("Loop", ["/chain/n", "", "x"], [OUT], body=body)]
    seq_inputs = []
    for name, seq in SEQ.items():
        t = inputs[name].type.tensor_type
        seq_inputs.append(helper.make_tensor_value_info(seq, t.elem_type, ["n", *[d.dim_param or d.dim_value
                                                                                  for d in t.shape.dim]]))
    out = onnx.ValueInfoProto()
    out.CopyFrom(g.output[0])
    out.name = OUT
    graph = helper.make_graph(outer, f"{g.name}_loop", [i for i in g.input if i.name not in SEQ] + seq_inputs, [out],
                              [*g.initializer, helper.make_tensor("/chain/zero", TensorProto.INT64, [], [0])])
    model = helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version)
    return model.SerializeToString()


def measure(path, plan_name, batch, rounds, form, steps, threads) -> dict:
    bundle = read_bundle(path)
    config = bundle.config
    plan = build_plan(plan_name, config.grid, cfg=3.0)
    comps = onnx_backend.OnnxComponents(bundle, providers=["CPUExecutionProvider"], threads=threads)
    name = comps._head_name(True)
    comps.session(name)
    g = bundle.graphs[name]
    step = bundle.member(g["member"])
    proto = chain_proto(step, steps) if form == "unrolled" else loop_proto(step)
    chain = onnx_backend.make_session(proto, {g["weights"]: bundle.member(g["weights"])}, ["CPUExecutionProvider"],
                                      1 if comps.shards.get(name, 1) > 1 else threads)  # as the step graph's session
    rng = np.random.default_rng(0)
    c, D = config.token_dim, config.decoder_embed_dim
    work = []  # per AR step: x, z, head calls, step noise
    for s in range(plan.num_steps):
        sc = step_calls(plan, s, batch)
        R = sc.head[-1].rows
        noise = [rng.standard_normal((max(gr.T - 1, 0), batch * gr.size, c), dtype=np.float32) for gr in sc.groups]
        work.append((rng.standard_normal((R, c), dtype=np.float32), rng.standard_normal((2 * R, D), dtype=np.float32),
                     sc.head, noise))
    ways = {"step": lambda _name: None, "chain": lambda _name: (chain, steps)}
    w = plan.cfg_weight(0)

    def run(way, item):
        comps.chain = ways[way]  # what the head loop asks for its chain graph
        x, z, calls, noise = item
        return comps.diffuse(x.copy(), z, calls, w, noise)

    same = all(np.array_equal(run("step", item), run("chain", item)) for item in work)
    clock = time.process_time if threads == 1 else time.perf_counter
    times = {way: [] for way in ways}
    for i in range(rounds):
        spent = dict.fromkeys(ways, 0.0)
        for k, item in enumerate(work):  # interleaved AR step by AR step, in alternating order
            for way in (list(ways) if (i + k) % 2 else list(ways)[::-1]):
                t0 = clock()
                run(way, item)
                spent[way] += clock() - t0
        for way in ways:
            times[way].append(spent[way] / batch)
    med = {way: statistics.median(ts) for way, ts in times.items()}
    best = {way: min(ts) for way, ts in times.items()}
    return {"bundle": path, "model": config.name, "precision": bundle.precision, "plan": plan_name, "batch": batch,
            "form": form, "steps_per_chain_call": steps, "max_rows": onnx_backend.CHAIN_MAX_ROWS,
            "threads": threads, "rounds": rounds, "same_bits": bool(same),
            "step_s_per_image": round(med["step"], 5), "chain_s_per_image": round(med["chain"], 5),
            "step_over_chain": round(med["step"] / med["chain"], 3),
            "step_over_chain_best": round(best["step"] / best["chain"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--plan", default="gtr")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--form", choices=("unrolled", "loop"), default="unrolled")
    ap.add_argument("--steps", type=int, default=CHAIN_STEPS, help="diffusion steps per chain call")
    ap.add_argument("--max-rows", type=int, default=onnx_backend.CHAIN_MAX_ROWS,
                    help="largest rows (per shard) a chain call runs on")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    onnx_backend.CHAIN_MAX_ROWS = args.max_rows  # the head loop reads it per call
    for path in args.bundles:
        for batch in (int(b) for b in args.batch.split(",")):
            print(json.dumps(measure(path, args.plan, batch, args.rounds, args.form, args.steps, args.threads)),
                  flush=True)


if __name__ == "__main__":
    main()
