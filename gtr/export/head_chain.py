"""The head chain: `steps` diffusion steps of a head-step graph as ONE graph, by graph surgery.

    chain = chain_model(onnx.load_from_string(step_proto), steps=CHAIN_STEPS)

The step graph ("head" / "head_nocfg", gtr.export.graphs) maps x, t, z, coef, [cfg_weight,] noise to
x_prev. The chain graph takes the per-step inputs stacked over a static number of steps and returns x
after all of them:

    x [r,c], z [r2,D], [cfg_weight [r,1],] t_seq [steps,r] i64, coef_seq [steps,r,7], noise_seq [steps,r,c]
    -> x_final [r,c]

It is the step graph's nodes repeated `steps` times (unrolled), step j reading row j of the stacked
inputs and the x that step j - 1 made, so every step computes exactly what one step-graph call does.
All copies read the step graph's initializers, which keep their external-data references: a chain
made from a packed step graph reads the very same weight blob (nothing is stored twice).

Why unrolled and not an ONNX Loop: on onnxruntime 1.32 CPU a Loop over the step graph measured no
faster than one call per step (each iteration costs about what a call does), and for int8 graphs
6.5x slower (its profile: the body's quantized Gemms take ~15x their time in the step graph, as if
their weights, which live in the outer graph, were not pre-packed). The exporter adds chains to fp32 bundles with small heads only: fp16 and int8 chains
measured slower than step calls, and the fp16 chain is not bit-identical (benchmarks/head_chain_cpu.py,
docs/speed.md).
"""
from __future__ import annotations

from gtr.runtime.head_inputs import CHAIN_OUTPUT as OUTPUT, CHAIN_SEQ_INPUTS as SEQ_INPUTS

CHAIN_STEPS = 10  # steps per chain call: the FTS runs of the gtr plans (20, 30, 50 calls) are multiples


def chain_inputs(step_inputs: list[dict], steps: int = CHAIN_STEPS) -> list[dict]:
    """The chain graph's input spec ({"name", "dtype", "shape"}) from the step graph's: x, z,
    [cfg_weight,] then the stacked t_seq, coef_seq, noise_seq with a leading axis of `steps`."""
    fixed = [dict(i) for i in step_inputs if i["name"] not in SEQ_INPUTS]
    seq = [{"name": SEQ_INPUTS[i["name"]], "dtype": i["dtype"], "shape": [steps, *i["shape"]]}
           for i in step_inputs if i["name"] in SEQ_INPUTS]
    return fixed + seq


def chain_outputs(step_outputs: list[dict]) -> list[dict]:
    return [{**step_outputs[0], "name": OUTPUT}]


def chain_model(step, steps: int = CHAIN_STEPS):
    """The chain ModelProto of a head-step ModelProto (which is not modified). ValueError when the step
    graph does not look like one (inputs x, t, coef, noise; one output) or steps < 1."""
    import onnx
    from onnx import TensorProto, helper

    g = step.graph
    inputs = {i.name: i for i in g.input}
    if any(n not in inputs for n in ("x", *SEQ_INPUTS)) or len(g.output) != 1 or steps < 1:
        raise ValueError(f"not a head-step graph or bad step count: inputs {list(inputs)}, "
                         f"{len(g.output)} output(s), {steps} steps")
    clash = set(inputs) & {*SEQ_INPUTS.values(), OUTPUT}
    if clash:
        raise ValueError(f"the head-step graph already uses the name(s) {sorted(clash)}")
    local = {o for n in g.node for o in n.output}  # values each copy of the step makes: renamed per copy
    nodes, extra, x = [], [], "x"
    for j in range(steps):
        index = f"/chain/{j}/index"
        extra.append(helper.make_tensor(index, TensorProto.INT64, [], [j]))
        names = {"x": x}
        for name, seq in SEQ_INPUTS.items():
            names[name] = f"/chain/{j}/{name}"
            nodes.append(helper.make_node("Gather", [seq, index], [names[name]], name=f"/chain/{j}/gather_{name}",
                                          axis=0))
        for node in g.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.input[:] = [names.get(i, f"/chain/{j}/{i}" if i in local else i) for i in n.input]
            n.output[:] = [f"/chain/{j}/{o}" for o in n.output]
            n.name = f"/chain/{j}/{node.name}"
            nodes.append(n)
        x = f"/chain/{j}/{g.output[0].name}"
    nodes.append(helper.make_node("Identity", [x], [OUTPUT], name="/chain/output"))

    seq_inputs = []
    for name, seq in SEQ_INPUTS.items():
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(inputs[name])
        vi.name = seq
        dims = vi.type.tensor_type.shape.dim
        kept = [onnx.TensorShapeProto.Dimension() for _ in dims]
        for k, d in zip(kept, dims):
            k.CopyFrom(d)
        del dims[:]
        dims.add().dim_value = steps
        dims.extend(kept)
        seq_inputs.append(vi)
    out = onnx.ValueInfoProto()
    out.CopyFrom(g.output[0])
    out.name = OUTPUT
    graph = helper.make_graph(nodes, f"{g.name}_chain", [i for i in g.input if i.name not in SEQ_INPUTS] + seq_inputs,
                              [out], [*g.initializer, *extra])
    return helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version,
                             producer_name=step.producer_name, doc_string=f"{step.doc_string}, {steps} steps chained")


def chain_proto(step_proto, steps: int = CHAIN_STEPS) -> bytes:
    """Serialized chain graph of a serialized step graph (external-data references kept as they are)."""
    import onnx
    return chain_model(onnx.load_from_string(bytes(step_proto)), steps).SerializeToString()
