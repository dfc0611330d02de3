"""Sibling MatMulNBits over one input stacked into one: the same arithmetic, fewer kernels.

Siblings read the same hidden state with the same K, bits and block, and a MatMulNBits
computes each output column from its own row of blocks, so their quantized weights stacked
along N are one matrix whose columns are the originals'. A decode step then dispatches one
kernel where it dispatched two or three. At one row on 2 cores a 576-wide MatMulNBits costs
about as much in dispatch as in weight reads (a linear fit over the ONNX profile of real
SmolLM2-135M: ~8 µs fixed per node).
* gate and up (`gate_up_fusions`): one MatMulNBits, then a Split. Real SmolLM2 cpu-int4: the
  same quality figures (top-1 88.7 %, KLD 0.041) and size, a bare 1-row decode step 1.4-1.8 %
  faster (the two builds interleaved in one process, 60 pairs in each order; the order itself
  moved a step 3-6 %, so the two orders' ratios are combined as a geometric mean).
* q, k and v (`qkv_fusions`): one MatMulNBits whose output GroupQueryAttention takes packed
  (its key and value inputs left empty), so no Split: two nodes fewer per layer. Only where
  the three MatMuls feed the attention directly (no bias Add between, as Qwen2 has) and share
  bits, which puts q at k and v's 8 bits. Real SmolLM2 cpu-int4 (recipes/llama.yaml pays for
  q's bytes with ffn down at 4 bits outside llama.cpp's use_more_bits layers): a bare 1-row
  decode step 8 % faster (30 interleaved pairs each order, geometric mean 0.92), 4 rows 7 %.

Each `*_fusions` plans the edit on the quantized graph as (node index -> new nodes, indices to
drop, initializers to add); nbits.quantize_graph applies it with the same `_rebuild` that
swapped its MatMuls in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["gate_up_fusions", "qkv_fusions"]

GATE, UP, FUSED = "/mlp/gate_proj/MatMul", "/mlp/up_proj/MatMul", "/mlp/gate_up_proj/MatMul"
Q, K, V = "/attn/q_proj/MatMul", "/attn/k_proj/MatMul", "/attn/v_proj/MatMul"
QKV = "/attn/qkv_proj/MatMul"
Edit = tuple[dict[int, list[Any]], set[int], list[Any]]


def gate_up_fusions(graph: Any) -> Edit:
    """Every fusable layer's gate and up as one MatMulNBits and a Split, in the shape
    nbits._rebuild takes: (node index -> [fused, Split], the up nodes to drop, initializers)."""
    import numpy as np
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in graph.initializer}
    index = {node.name: i for i, node in enumerate(graph.node)}
    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    added: list[Any] = []
    for position, gate in enumerate(graph.node):
        up_index = index.get(gate.name.replace(GATE, UP), -1) if gate.name.endswith(GATE) else -1
        siblings = [gate, graph.node[up_index]] if up_index >= 0 else []
        if not siblings or not _fusable(siblings, initializers):
            continue
        stem = gate.name[: -len(GATE)] + FUSED
        fused, tensors = _stacked(siblings, stem, ("gate_proj", "gate_up_proj"), initializers)
        sizes = f"{stem}/split_sizes"
        widths = [_attribute(node, "N") for node in siblings]
        tensors.append(numpy_helper.from_array(np.asarray(widths, dtype=np.int64), sizes))
        split = helper.make_node(
            "Split",
            [fused.output[0], sizes],
            [node.output[0] for node in siblings],
            name=f"{stem}/Split",
            axis=-1,
        )
        replaced[position] = [fused, split]
        dropped.add(up_index)
        added += tensors
    return replaced, dropped, added


def qkv_fusions(graph: Any) -> Edit:
    """Every fusable layer's q, k and v as one MatMulNBits feeding its GroupQueryAttention
    packed: (q's index -> [fused], the attention's index -> [it, rewired], k and v dropped)."""
    from onnx import helper

    initializers = {t.name: t for t in graph.initializer}
    index = {node.name: i for i, node in enumerate(graph.node)}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    added: list[Any] = []
    for position, q in enumerate(graph.node):
        if not q.name.endswith(Q):
            continue
        stem = q.name[: -len(Q)]
        found = [index.get(stem + suffix, -1) for suffix in (K, V)]
        if min(found) < 0:
            continue
        siblings = [q, *(graph.node[i] for i in found)]
        users = {i for node in siblings for i in consumers.get(node.output[0], [])}
        attention = graph.node[users.pop()] if len(users) == 1 else None
        if attention is None or attention.op_type != "GroupQueryAttention":
            continue
        if list(attention.input[:3]) != [node.output[0] for node in siblings]:
            continue
        if not _fusable(siblings, initializers):
            continue
        fused, tensors = _stacked(siblings, stem + QKV, ("q_proj", "qkv_proj"), initializers)
        packed = helper.make_node(
            attention.op_type,
            [fused.output[0], "", "", *attention.input[3:]],
            list(attention.output),
            name=attention.name,
            domain=attention.domain,
        )
        packed.attribute.extend(attention.attribute)
        replaced[position] = [fused]
        replaced[index[attention.name]] = [packed]
        dropped.update(found)
        added += tensors
    return replaced, dropped, added


def _stacked(
    siblings: list[Any], stem: str, rename: tuple[str, str], initializers: dict[str, Any]
) -> tuple[Any, list[Any]]:
    """One MatMulNBits named `stem` whose weight, scales and zero points are the siblings'
    stacked along N (named after the first's, `rename` applied), and those initializers."""
    import numpy as np
    from onnx import helper, numpy_helper

    first = siblings[0]
    tensors, names = [], []
    for position, own in enumerate(first.input[1:], start=1):
        name = own.replace(*rename)
        parts = [numpy_helper.to_array(initializers[node.input[position]]) for node in siblings]
        tensors.append(numpy_helper.from_array(np.concatenate(parts), name))
        names.append(name)
    attributes = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    fused = helper.make_node(
        "MatMulNBits",
        [first.input[0], *names],
        [f"{stem}/output_0"],
        name=stem,
        domain=first.domain,
        **{**attributes, "N": sum(_attribute(node, "N") for node in siblings)},
    )
    return fused, tensors


def _fusable(siblings: list[Any], initializers: dict[str, Any]) -> bool:
    """All MatMulNBits over one input, alike but for N, with weight, scales and row-packed
    zero points only (a 4-bit zero-point tensor with an odd block count is packed flat)."""
    first = siblings[0]
    for node in siblings:
        if node.op_type != "MatMulNBits" or len(node.input) != 4:
            return False
        if node.input[0] != first.input[0] or _attributes_but_n(node) != _attributes_but_n(first):
            return False
        if not all(name in initializers for name in node.input[1:]):
            return False
        if [int(d) for d in initializers[node.input[3]].dims][:1] != [_attribute(node, "N")]:
            return False
    return True


def _attribute(node: Any, name: str) -> int:
    return next(int(a.i) for a in node.attribute if a.name == name)


def _attributes_but_n(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "N"}
