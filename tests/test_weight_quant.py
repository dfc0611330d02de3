"""Our weight quantizer (compiler/weight_quant.py, compiler/nbits.py): what onnxruntime computes
from the written MatMulNBits / GatherBlockQuantized is exactly our own dequantization, the scale
search never does worse than round-to-nearest, and the same inputs give the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler import weight_quant
from compiler.importance import Activations
from compiler.nbits import WeightOptions, bits_for, quantize_graph, sensitive_layer

VOCAB, HIDDEN, FFN = 64, 96, 160
HEAD = 16  # tiny_attention's head size


def tiny_decoder(folder: Path, *, tied: bool) -> dict[str, np.ndarray]:
    """input_ids -> embedding -> two MatMuls (the layer-0 'v_proj' and 'down_proj') -> lm_head.

    Tied: the builder's float shape, Transpose(lm_head weight) feeding the Gather.
    """
    from onnx import helper

    rng = np.random.default_rng(7)
    weights = {
        "lm_head.MatMul.weight": rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32),
        "model.layers.0.attn.v_proj.MatMul.weight": rng.standard_normal((HIDDEN, FFN)).astype(
            np.float32
        ),
        "model.layers.0.mlp.down_proj.MatMul.weight": rng.standard_normal((FFN, HIDDEN)).astype(
            np.float32
        ),
    }
    nodes = []
    if tied:
        nodes.append(
            helper.make_node(
                "Transpose",
                ["lm_head.MatMul.weight"],
                ["table"],
                name="/model/embed_tokens/Transpose",
            )
        )
        table = "table"
    else:
        weights["model.embed_tokens.weight"] = rng.standard_normal((VOCAB, HIDDEN)).astype(
            np.float32
        )
        table = "model.embed_tokens.weight"
    nodes += [
        helper.make_node("Gather", [table, "input_ids"], ["h0"], name="/model/embed_tokens/Gather"),
        helper.make_node(
            "MatMul",
            ["h0", "model.layers.0.attn.v_proj.MatMul.weight"],
            ["h1"],
            name="/model/layers.0/attn/v_proj/MatMul",
        ),
        helper.make_node(
            "MatMul",
            ["h1", "model.layers.0.mlp.down_proj.MatMul.weight"],
            ["h2"],
            name="/model/layers.0/mlp/down_proj/MatMul",
        ),
        # The builder names its final norm after the last layer: /model/layers.{num_layers}/...
        helper.make_node("Identity", ["h2"], ["h3"], name="/model/layers.1/final_norm/Identity"),
        helper.make_node(
            "MatMul", ["h3", "lm_head.MatMul.weight"], ["logits"], name="/lm_head/MatMul"
        ),
    ]
    save_float_decoder(folder, nodes, weights)
    return weights


def save_float_decoder(folder: Path, nodes: list, weights: dict[str, np.ndarray]) -> None:
    """`nodes` over `weights` as the builder's float graph: input_ids in, logits out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "S", VOCAB])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )


def run(model: Path, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": ids})[0]


def dequantized(weight: np.ndarray, bits: int, block: int) -> np.ndarray:
    """The float [K, N] weight our quantizer says the kernels compute with."""
    return weight_quant.quantize(weight.T, bits, block).dequantize().T


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize(
    ("bits", "block", "block8"), [(4, 32, 32), (4, 16, 16), (8, 32, 32), (4, 16, 32)]
)
def test_onnxruntime_computes_exactly_our_dequantized_weights(tmp_path, tied, bits, block, block8):
    weights = tiny_decoder(tmp_path / "float", tied=tied)
    options = WeightOptions(
        bits=bits,
        block_size=block,
        eight_bit_block_size=block8,  # the 8-bit MatMuls and the table may have their own block
        embedding_bits=8,
        eight_bit=["mlp/down_proj@sensitive"],  # one layer: layer 0 is in the last eighth
        accuracy_level=1,  # float32 activations: the product must be our dequantization's
    )
    counts = quantize_graph(tmp_path / "float" / "model.onnx", tmp_path / "q", options)
    assert counts == ({"int4": 1, "int8": 2} if bits == 4 else {"int8": 3}) | {"embedding": 8}

    v_block = block8 if bits == 8 else block
    v = dequantized(weights["model.layers.0.attn.v_proj.MatMul.weight"], bits, v_block)
    down = dequantized(weights["model.layers.0.mlp.down_proj.MatMul.weight"], 8, block8)
    head = dequantized(weights["lm_head.MatMul.weight"], 8, block8)
    table = (
        head.T
        if tied
        else weight_quant.quantize(weights["model.embed_tokens.weight"], 8, block8).dequantize()
    )
    ids = np.array([[0, 5, 63, 17, 5]], dtype=np.int64)
    expected = table[ids[0]] @ v @ down @ head
    got = run(tmp_path / "q" / "model.onnx", ids)[0]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-4 * np.abs(expected).max())


def test_a_tied_embedding_is_stored_once_for_the_gather_and_the_lm_head(tmp_path):
    import onnx

    tiny_decoder(tmp_path / "float", tied=True)
    quantize_graph(tmp_path / "float" / "model.onnx", tmp_path / "q", WeightOptions())
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"), load_external_data=False).graph
    ops = {n.name: n for n in graph.node}
    head = ops["/lm_head/MatMul"]
    gather = ops["/model/embed_tokens/Gather"]
    assert head.op_type == "MatMulNBits" and gather.op_type == "GatherBlockQuantized"
    reshape = next(n for n in graph.node if n.output[0] == gather.input[0])
    assert reshape.input[0] == head.input[1]  # one quantized table
    assert gather.input[2:] == head.input[2:]  # and its scales and zero points
    assert not any(t.name == "lm_head.MatMul.weight" for t in graph.initializer)
    assert not any(n.op_type in ("MatMul", "Gather", "Transpose") for n in graph.node)


def test_the_same_float_model_quantizes_to_the_same_bytes(tmp_path):
    tiny_decoder(tmp_path / "float", tied=True)
    options = WeightOptions(importance=True, eight_bit=["v_proj@sensitive"])
    activations = Activations({"h1": np.linspace(0.1, 3.0, FFN, dtype=np.float32)}, {})
    for name in ("a", "b"):
        quantize_graph(tmp_path / "float" / "model.onnx", tmp_path / name, options, activations)
    for file in ("model.onnx", "model.onnx.data"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_the_scale_search_never_loses_to_round_to_nearest_and_importance_moves_the_error():
    rng = np.random.default_rng(3)
    weight = rng.standard_t(4, size=(48, 256)).astype(np.float32)  # heavy tails, as trained ones
    rtn = weight_quant.quantize(weight, 4, 32, search=False)
    searched = weight_quant.quantize(weight, 4, 32)

    def block_error(q, importance=None):
        diff = (q.dequantize() - weight) ** 2 * (1.0 if importance is None else importance)
        return diff.reshape(48, -1, 32).sum(-1)

    assert np.all(block_error(searched) <= block_error(rtn) + 1e-6)
    assert block_error(searched).sum() < 0.95 * block_error(rtn).sum()  # measured 0.93
    importance = np.where(np.arange(256) % 32 < 4, 50.0, 1.0).astype(np.float32)
    weighted = weight_quant.quantize(weight, 4, 32, importance=importance)
    assert block_error(weighted, importance).sum() < block_error(searched, importance).sum()
    assert rtn.zero_points.dtype == np.uint8 and int(searched.zero_points.max()) <= 15


def test_eight_bits_go_where_llama_cpp_puts_more_bits():
    layers = 30
    sensitive = [i for i in range(layers) if sensitive_layer(i, layers)]
    assert sensitive == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    options = WeightOptions(eight_bit=["attn/v_proj", "mlp/down_proj@sensitive"])
    assert bits_for("/model/layers.4/attn/v_proj/MatMul", options, layers) == 8
    assert bits_for("/model/layers.5/mlp/down_proj/MatMul", options, layers) == 8
    assert bits_for("/model/layers.4/mlp/down_proj/MatMul", options, layers) == 4
    assert bits_for("/model/layers.4/attn/q_proj/MatMul", options, layers) == 4


def test_gptq_lowers_the_output_error_on_held_out_correlated_activations():
    """GPTQ compensates each rounding through XᵀX: on activations drawn like the calibration ones
    (correlated channels of unequal scale, as a decoder's are) the product errs less than with
    the scale search alone (measured 1.08 against 5.10, and 5.45 for round-to-nearest)."""
    rng = np.random.default_rng(1)
    rows, k, tokens = 256, 512, 2048
    mix = rng.standard_normal((k, k)) * 0.3 + np.eye(k)
    scale = np.exp(rng.standard_normal(k))

    def activations() -> np.ndarray:
        return ((rng.standard_normal((tokens, k)) * scale) @ mix).astype(np.float32)

    calibration, held_out = activations(), activations()
    weight = (rng.standard_t(5, size=(rows, k)) * 0.05).astype(np.float32)
    hessian = calibration.T.astype(np.float64) @ calibration / tokens

    def output_error(quantized: weight_quant.BlockQuantized) -> float:
        return float(((held_out @ (quantized.dequantize() - weight).T) ** 2).mean())

    gptq = weight_quant.quantize_gptq(weight, hessian, 4, 32)
    assert output_error(gptq) < 0.5 * output_error(weight_quant.quantize(weight, 4, 32))
    assert gptq.levels.max() <= 15 and gptq.scales.shape == (rows, k // 32)


def tiny_mlp(folder: Path) -> None:
    """input_ids -> embedding -> the builder's SiLU MLP (gate, up, down of layer 0) -> lm_head."""
    from onnx import helper

    rng = np.random.default_rng(11)
    shapes = {"gate_proj": (HIDDEN, FFN), "up_proj": (HIDDEN, FFN), "down_proj": (FFN, HIDDEN)}
    weights = {
        f"model.layers.0.mlp.{name}.MatMul.weight": rng.standard_normal(shape).astype(np.float32)
        for name, shape in shapes.items()
    }
    weights["model.embed_tokens.weight"] = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    weights["lm_head.MatMul.weight"] = rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32)

    def matmul(name: str, source: str, out: str) -> object:
        return helper.make_node(
            "MatMul",
            [source, f"model.layers.0.mlp.{name}.MatMul.weight"],
            [out],
            name=f"/model/layers.0/mlp/{name}/MatMul",
        )

    nodes = [
        helper.make_node(
            "Gather", ["model.embed_tokens.weight", "input_ids"], ["h"], name="/model/embed/Gather"
        ),
        matmul("gate_proj", "h", "gate"),
        matmul("up_proj", "h", "up"),
        helper.make_node("Sigmoid", ["gate"], ["sig"], name="/model/layers.0/mlp/act/Sigmoid"),
        helper.make_node("Mul", ["gate", "sig"], ["act"], name="/model/layers.0/mlp/act/Mul"),
        helper.make_node("Mul", ["act", "up"], ["mixed"], name="/model/layers.0/mlp/Mul"),
        matmul("down_proj", "mixed", "h2"),
        helper.make_node("Identity", ["h2"], ["h3"], name="/model/layers.1/final_norm/Identity"),
        helper.make_node(
            "MatMul", ["h3", "lm_head.MatMul.weight"], ["logits"], name="/lm_head/MatMul"
        ),
    ]
    save_float_decoder(folder, nodes, weights)


@pytest.mark.parametrize("bits", [4, 8])
def test_a_fused_gate_and_up_computes_what_the_two_matmuls_did(tmp_path, bits):
    import onnx

    tiny_mlp(tmp_path / "float")
    logits = {}
    for fuse in (False, True):
        # block 16: 6 blocks a row, so 4-bit zero points are packed by row (fusable)
        options = WeightOptions(bits=bits, block_size=16, fuse_gate_up=fuse)
        counts = quantize_graph(tmp_path / "float" / "model.onnx", tmp_path / str(fuse), options)
        assert counts.get("fused_gate_up", 0) == int(fuse)
        logits[fuse] = run(tmp_path / str(fuse) / "model.onnx", np.array([[3, 9, 40, 9]]))
    np.testing.assert_allclose(logits[True], logits[False], rtol=1e-6, atol=1e-5)

    graph = onnx.load(str(tmp_path / "True" / "model.onnx"), load_external_data=False).graph
    matmuls = [n.name for n in graph.node if n.op_type == "MatMulNBits"]
    assert "/model/layers.0/mlp/gate_up_proj/MatMul" in matmuls
    assert not any("/gate_proj/" in name or "/up_proj/" in name for name in matmuls)
    assert [n.op_type for n in graph.node].count("Split") == 1


def tiny_attention(folder: Path) -> None:
    """input_ids -> embedding -> layer 0's q, k and v MatMuls -> GroupQueryAttention (2 query
    heads over 1 key/value head, no past) -> lm_head: the builder's unfused attention."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(13)
    widths = {"q_proj": 2 * HEAD, "k_proj": HEAD, "v_proj": HEAD}
    weights = {
        f"model.layers.0.attn.{name}.MatMul.weight": rng.standard_normal((HIDDEN, n)).astype(
            np.float32
        )
        for name, n in widths.items()
    }
    weights["model.embed_tokens.weight"] = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    weights["lm_head.MatMul.weight"] = rng.standard_normal((2 * HEAD, VOCAB)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Gather", ["model.embed_tokens.weight", "input_ids"], ["h"], name="/model/embed/Gather"
        ),
        *(
            helper.make_node(
                "MatMul",
                ["h", f"model.layers.0.attn.{name}.MatMul.weight"],
                [name],
                name=f"/model/layers.0/attn/{name}/MatMul",
            )
            for name in widths
        ),
        helper.make_node("Shape", ["input_ids"], ["shape"], name="/model/shape"),
        helper.make_node("Gather", ["shape", "one"], ["s64"], name="/model/s", axis=0),
        helper.make_node("Cast", ["s64"], ["total"], name="/model/total", to=TensorProto.INT32),
        helper.make_node("Sub", ["total", "one32"], ["last"], name="/model/last"),
        helper.make_node("Reshape", ["last", "dims"], ["seqlens"], name="/model/seqlens"),
        helper.make_node(
            "GroupQueryAttention",
            ["q_proj", "k_proj", "v_proj", "", "", "seqlens", "total"],
            ["attn", "present_key", "present_value"],
            name="/model/layers.0/attn/GroupQueryAttention",
            domain="com.microsoft",
            num_heads=2,
            kv_num_heads=1,
        ),
        helper.make_node("Identity", ["attn"], ["h3"], name="/model/layers.1/final_norm/Identity"),
        helper.make_node(
            "MatMul", ["h3", "lm_head.MatMul.weight"], ["logits"], name="/lm_head/MatMul"
        ),
    ]
    constants = {
        "one": np.asarray(1, np.int64),
        "one32": np.asarray(1, np.int32),
        "dims": np.asarray([1], np.int64),
    }
    save_float_decoder(folder, nodes, weights | constants)
    import onnx  # the attention is a contrib op: declare its domain

    model = onnx.load(str(folder / "model.onnx"))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    del model.graph.initializer[:]
    model.graph.initializer.extend(
        numpy_helper.from_array(w, name) for name, w in (weights | constants).items()
    )
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )


@pytest.mark.parametrize("bits", [4, 8])
def test_a_fused_qkv_computes_what_the_three_matmuls_did(tmp_path, bits):
    import onnx

    tiny_attention(tmp_path / "float")
    logits = {}
    for fuse in (False, True):
        options = WeightOptions(bits=bits, block_size=16, fuse_qkv=fuse)
        counts = quantize_graph(tmp_path / "float" / "model.onnx", tmp_path / str(fuse), options)
        assert counts.get("fused_qkv", 0) == int(fuse)
        logits[fuse] = run(tmp_path / str(fuse) / "model.onnx", np.array([[3, 9, 40, 9]]))
    np.testing.assert_allclose(logits[True], logits[False], rtol=1e-6, atol=1e-5)

    graph = onnx.load(str(tmp_path / "True" / "model.onnx"), load_external_data=False).graph
    matmuls = [n.name for n in graph.node if n.op_type == "MatMulNBits"]
    assert "/model/layers.0/attn/qkv_proj/MatMul" in matmuls
    assert not any(f"/{p}_proj/" in name for name in matmuls for p in "qkv")
    attention = next(n for n in graph.node if n.op_type == "GroupQueryAttention")
    assert list(attention.input[:3]) == ["/model/layers.0/attn/qkv_proj/MatMul/output_0", "", ""]


def test_q_k_and_v_of_different_bits_stay_three_matmuls(tmp_path):
    tiny_attention(tmp_path / "float")
    options = WeightOptions(bits=4, block_size=16, eight_bit=["attn/k_proj"], fuse_qkv=True)
    counts = quantize_graph(tmp_path / "float" / "model.onnx", tmp_path / "out", options)
    assert counts.get("fused_qkv", 0) == 0
    assert (counts["int4"], counts["int8"]) == (2, 2)  # q and v; k and the lm_head (8-bit table)
