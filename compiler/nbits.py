"""Rewrite a float decoder graph into onnxruntime's weight-only quantized ops, our scales.

Input: the onnxruntime-genai builder's fp32 `model.onnx` (float `MatMul`s over [K, N] weight
initializers; the embedding a `Gather` over [vocab, hidden], or, tied, a `Transpose` of the
lm_head weight then a `Gather`). Output: the same graph with each weight MatMul a `MatMulNBits`
and the embedding a `GatherBlockQuantized`, quantized by `compiler/weight_quant.py`. A tied
embedding stays one table: the lm_head's quantized weight, reshaped, feeds the Gather, so it is
stored once (as llama.cpp stores one Q8_0 table for SmolLM2).

Which weights get 8 bits is data (`WeightOptions.eight_bit`): node-name fragments, optionally
`@sensitive` for llama.cpp's `use_more_bits` layers (the first and last eighth, and every third
one between), which is where Q4_K_M spends its Q6_K bits on attn_v and ffn_down.

Tensors are read one at a time from the external data file (`numpy_helper.to_array`), so the
float model is never held whole. Deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import numpy as np

    from compiler.importance import Activations
    from compiler.weight_quant import BlockQuantized

__all__ = [
    "QUANTIZER_VERSION",
    "WeightOptions",
    "bits_for",
    "key_facts",
    "quantize_graph",
    "sensitive_layer",
]

MS_DOMAIN = "com.microsoft"
# Bump when the quantizer writes other bytes for the same options (it enters build keys).
QUANTIZER_VERSION = "1"
_LAYER = re.compile(r"/layers\.(\d+)/")


class WeightOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Our weight quantizer's settings (recipe `options.weights`; the builder then runs at fp32).

    `bits`/`block_size`: the body's MatMuls. `search`: scale search (False: onnxruntime's RTN).
    `importance`: weigh each input channel by its mean square activation on the calibration
    slice (compiler/corpus/calibration). `embedding_bits`: the embedding table and the lm_head
    (one table when tied). `eight_bit`: node-name fragments (fnmatch) whose MatMuls get 8 bits,
    `NAME@sensitive` for llama.cpp's use_more_bits layers only. `accuracy_level`: MatMulNBits'
    (4: int8 activations, issue 11's measured speed default). `gptq`: the 4-bit MatMuls by GPTQ
    (rounding errors compensated through XᵀX on the calibration slice; needs `importance`).
    `eight_bit_block_size`: the block of the 8-bit MatMuls and the 8-bit table (0: `block_size`);
    8-bit levels need fewer scales to be faithful, so their scale bytes can go to the 4-bit ones.
    `fuse_gate_up`: each MLP's gate and up MatMulNBits as one, then a Split (compiler/fuse.py:
    the same arithmetic, one kernel dispatch fewer per layer). `fuse_qkv`: each attention's q,
    k and v as one MatMulNBits its GroupQueryAttention takes packed (two fewer per layer; only
    where the three share bits, so `eight_bit` names all three or none).
    """

    bits: int = 4
    block_size: int = 32
    search: bool = True
    importance: bool = False
    embedding_bits: int = 8
    eight_bit: list[str] = []
    accuracy_level: int = 4
    gptq: bool = False
    eight_bit_block_size: int = 0
    fuse_gate_up: bool = False
    fuse_qkv: bool = False

    def __post_init__(self) -> None:
        if self.bits not in (4, 8) or self.embedding_bits not in (4, 8):
            raise ValueError("weights.bits and weights.embedding_bits must be 4 or 8")
        for field in ("block_size", "eight_bit_block_size"):
            block = getattr(self, field)
            if (block or 16) < 16 or block & (block - 1):
                raise ValueError(f"weights.{field} must be a power of two >= 16")
        if self.gptq and not self.importance:
            raise ValueError(
                "weights.gptq needs weights.importance (it reads the calibration slice)"
            )

    def block_for(self, bits: int) -> int:
        """The quantization block of a weight stored at `bits`."""
        return (
            self.eight_bit_block_size
            if bits == 8 and self.eight_bit_block_size
            else self.block_size
        )


def key_facts(target_options: dict[str, Any]) -> dict[str, str]:
    """What a build with `options.weights` also depends on: this quantizer and its calibration text."""
    weights = target_options.get("weights")
    if not isinstance(weights, dict):
        return {}
    facts = {"weight-quantizer": QUANTIZER_VERSION}
    if weights.get("importance"):
        from compiler.importance import calibration_digest

        facts["calibration"] = calibration_digest()
    return facts


def sensitive_layer(layer: int, layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def bits_for(node_name: str, options: WeightOptions, layers: int) -> int:
    """The bit width of one body MatMul by its node name (e.g. /model/layers.3/mlp/down_proj/MatMul)."""
    match = _LAYER.search(node_name)
    for rule in options.eight_bit:
        pattern, _, where = rule.partition("@")
        if not fnmatch.fnmatch(node_name, f"*{pattern}*"):
            continue
        if where == "sensitive" and (match is None or not sensitive_layer(int(match[1]), layers)):
            continue
        return 8
    return options.bits


def quantize_graph(
    model: Path,
    out_dir: Path,
    options: WeightOptions,
    activations: Activations | None = None,
) -> dict[str, Any]:
    """Write `out_dir/model.onnx` (+ `model.onnx.data`): `model` with its weights quantized.

    `activations`: per MatMul input name, its per-channel mean square (and XᵀX for GPTQ).
    Returns what build.json records: counts of MatMuls per bit width, the embedding's bits.

    Raises:
        ValueError: the graph is not the float decoder this pass knows (no weight MatMul).
    """
    import onnx
    from onnx import helper, numpy_helper

    from compiler import weight_quant

    proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    base = str(model.parent)
    initializers = {t.name: t for t in graph.initializer}

    def weight(name: str) -> np.ndarray:
        return numpy_helper.to_array(initializers[name], base_dir=base)

    # Counted over MatMuls: the builder names its final norm `/model/layers.{num_layers}/...`.
    layers = 1 + max(
        (int(m[1]) for n in graph.node if n.op_type == "MatMul" and (m := _LAYER.search(n.name))),
        default=0,
    )
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    new_nodes: dict[int, list[Any]] = {}  # index of a replaced node -> its replacement(s)
    dropped: set[int] = set()
    added: list[Any] = []
    counts: dict[str, int] = {}
    index_of = {id(n): i for i, n in enumerate(graph.node)}

    embedding = _embedding_gather(graph, initializers, producers)
    tied_weight = None
    tied_names: tuple[list[str], int, int, int] | None = None
    if embedding is not None and embedding.input[0] not in initializers:
        tied_weight = producers[embedding.input[0]].input[0]  # Transpose(lm_head weight)

    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        tensor = initializers[node.input[1]]
        if len(tensor.dims) != 2:
            continue
        is_head = node.input[1] == tied_weight or "lm_head" in node.name
        bits = options.embedding_bits if is_head else bits_for(node.name, options, layers)
        k, n = (int(d) for d in tensor.dims)
        quantized = _quantized(weight(node.input[1]).T, bits, node.input[0], options, activations)
        stem = node.input[1]
        names = [f"{stem}_Q{bits}", f"{stem}_scales", f"{stem}_zero_points"]
        blocks = quantized.scales.shape[1]
        zeros = weight_quant.pack_zero_points(quantized)
        zeros = zeros.reshape(n, -1) if bits == 8 or blocks % 2 == 0 else zeros
        added += [
            numpy_helper.from_array(weight_quant.pack_levels(quantized), names[0]),
            numpy_helper.from_array(quantized.scales, names[1]),
            numpy_helper.from_array(zeros, names[2]),
        ]
        replacement = helper.make_node(
            "MatMulNBits",
            [node.input[0], *names],
            list(node.output),
            name=node.name,
            domain=MS_DOMAIN,
            K=k,
            N=n,
            bits=bits,
            block_size=options.block_for(bits),
            accuracy_level=options.accuracy_level,
        )
        new_nodes[index_of[id(node)]] = [replacement]
        counts[f"int{bits}"] = counts.get(f"int{bits}", 0) + 1
        if node.input[1] == tied_weight:
            tied_names = (names, blocks, k, n)

    if not counts:
        raise ValueError(f"{model.name} has no float MatMul over a 2-D weight to quantize")
    if embedding is not None:
        block = options.block_for(options.embedding_bits)
        if tied_weight is not None:
            if tied_names is None:
                raise ValueError(f"{model.name}: the tied embedding's lm_head MatMul was not found")
            names, blocks, k, vocab = tied_names
            table = f"{tied_weight}_Q{options.embedding_bits}_rows"
            shape = f"{table}_shape"
            flat = blocks * block * options.embedding_bits // 8
            added.append(numpy_helper.from_array(_int64([vocab, flat]), shape))
            reshape = helper.make_node(
                "Reshape", [names[0], shape], [table], name=f"{table}/Reshape"
            )
            gather_inputs = [table, embedding.input[1], names[1], names[2]]
            transpose = producers[embedding.input[0]]
            if len(consumers.get(transpose.output[0], [])) == 1:
                dropped.add(index_of[id(transpose)])
            prefix = [reshape]
        else:
            stem = embedding.input[0]
            quantized = weight_quant.quantize(
                weight(stem), options.embedding_bits, block, search=options.search
            )
            k = quantized.k
            names = [f"{stem}_Q{options.embedding_bits}", f"{stem}_scales", f"{stem}_zero_points"]
            vocab, blocks = quantized.scales.shape
            zeros = weight_quant.pack_zero_points(quantized).reshape(vocab, -1)
            added += [
                numpy_helper.from_array(
                    weight_quant.pack_levels(quantized).reshape(vocab, -1), names[0]
                ),
                numpy_helper.from_array(quantized.scales, names[1]),
                numpy_helper.from_array(zeros, names[2]),
            ]
            gather_inputs = [names[0], embedding.input[1], names[1], names[2]]
            prefix = []
        if k % block:
            raise ValueError(f"the embedding width {k} is not a multiple of its block {block}")
        gather = helper.make_node(
            "GatherBlockQuantized",
            gather_inputs,
            list(embedding.output),
            name=embedding.name,
            domain=MS_DOMAIN,
            bits=options.embedding_bits,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        )
        new_nodes[index_of[id(embedding)]] = [*prefix, gather]
        counts["embedding"] = options.embedding_bits

    _rebuild(graph, new_nodes, dropped, added, base)
    from compiler.fuse import gate_up_fusions, qkv_fusions

    for wanted, plan, name in (
        (options.fuse_gate_up, gate_up_fusions, "fused_gate_up"),
        (options.fuse_qkv, qkv_fusions, "fused_qkv"),
    ):
        if wanted:
            fusions, fused_away, stacked = plan(graph)
            _rebuild(graph, fusions, fused_away, stacked, base)
            made = [n for nodes in fusions.values() for n in nodes if n.op_type == "MatMulNBits"]
            counts[name] = len(made)  # layers fused
    if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        proto,
        str(out_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=1024,
    )
    return counts


def _quantized(
    weight: np.ndarray,
    bits: int,
    activation: str,
    options: WeightOptions,
    activations: Activations | None,
) -> BlockQuantized:
    """One MatMul's weight [N, K]: GPTQ at the body's bits when asked, else the scale search."""
    from compiler import weight_quant

    hessian = activations.hessian.get(activation) if activations else None
    block = options.block_for(bits)
    if options.gptq and bits == options.bits and hessian is not None:
        return weight_quant.quantize_gptq(weight, hessian, bits, block)
    importance = (
        activations.mean_square.get(activation) if activations and options.importance else None
    )
    return weight_quant.quantize(weight, bits, block, search=options.search, importance=importance)


def _embedding_gather(graph: Any, initializers: dict[str, Any], producers: dict[str, Any]) -> Any:
    """The Gather that reads `input_ids` from a float table (or from a Transpose of one)."""
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] != "input_ids":
            continue
        data = node.input[0]
        if data in initializers and len(initializers[data].dims) == 2:
            return node
        source = producers.get(data)
        if source is not None and source.op_type == "Transpose" and source.input[0] in initializers:
            return node
    return None


def _rebuild(
    graph: Any, new_nodes: dict[int, list[Any]], dropped: set[int], added: list[Any], base: str
) -> None:
    """Swap the nodes in place (order kept), drop unused initializers, load the rest in memory."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    nodes = []
    for index, node in enumerate(graph.node):
        if index in dropped:
            continue
        nodes += new_nodes.get(index, [node])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = []
    for tensor in graph.initializer:
        if tensor.name not in used:
            continue
        if uses_external_data(tensor):
            load_external_data_for_tensor(tensor, base)
            tensor.data_location = 0
            del tensor.external_data[:]
        kept.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *added])


def _int64(values: list[int]) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.int64)
