"""Per-channel importance of each MatMul input, from the float graph on the calibration slice.

For y = x W, the squared output error of a weight error ΔW is Σ_k E[x_k²] ΔW_k² when channels
are taken apart (the diagonal of XᵀX, as llama.cpp's imatrix and AWQ use): a channel that
carries large activations needs its weights closer. We read E[x_k²] by running the builder's
float graph itself (with the lm_head prune bypassed, compiler/quality.py) over the calibration
slice (compiler/corpus/calibration, disjoint from the quality corpus), with every weight
MatMul's activation input added as a graph output, so any family the builder writes works.

The slice's digest enters the build key through `calibration_digest()`. Memory: one window's
activations at a time (`WINDOW` tokens), accumulated as float64 sums per channel; but the float
graph itself is loaded (4 bytes a weight: ~32 GB for an 8B model), so a model whose float graph
does not fit is refused with a MemoryError naming the setting, never swapped to death.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CALIBRATION_DIR",
    "Activations",
    "calibration_digest",
    "calibration_windows",
    "measure_importance",
]

CALIBRATION_DIR = Path(__file__).resolve().parent / "corpus" / "calibration"
WINDOW = 512


def calibration_digest() -> str:
    """`calibration@sha256:<12 hex>` over the slice's files in name order."""
    from compiler.quality import corpus_digest

    return corpus_digest(CALIBRATION_DIR, "calibration")


def calibration_windows(tokenizer: Any, window: int = WINDOW) -> list[list[int]]:
    from compiler.quality import corpus_windows

    return corpus_windows(tokenizer, window, CALIBRATION_DIR)


class Activations:
    """Per MatMul input name: the mean square per channel and (with `hessian`) the mean XᵀX."""

    def __init__(self, mean_square: dict[str, np.ndarray], hessian: dict[str, np.ndarray]):
        self.mean_square = mean_square
        self.hessian = hessian


def measure_importance(folder: Path, scratch: Path, *, hessian: bool = False) -> Activations:
    """Mean square of each weight MatMul's activation input over the slice, by input name.

    `folder` holds the float model.onnx, its data and the builder's genai_config/tokenizer.
    `hessian` also accumulates XᵀX [K, K] per input (GPTQ's H; float64, K² each).
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from transformers import AutoTokenizer

    from compiler.quality import (
        _available_memory,
        _bypass_prune,
        _external_files,
        _input_value,
        _read_json,
    )

    weights_bytes = sum(p.stat().st_size for p in folder.glob("*.onnx*"))
    if weights_bytes > _available_memory() * 0.6:
        raise MemoryError(
            f"weights.importance runs the float graph ({weights_bytes / 1e9:.1f} GB) and this "
            f"machine has {_available_memory() / 1e9:.1f} GB available; set weights.importance: "
            "false for this model"
        )
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    _bypass_prune(proto.graph)
    weights = {t.name for t in proto.graph.initializer if len(t.dims) == 2}
    inputs = sorted(
        {n.input[0] for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in weights}
    )
    present = {o.name for o in proto.graph.output}
    for name in inputs:
        if name not in present:
            proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    scratch.mkdir(parents=True, exist_ok=True)
    for data in _external_files(proto):
        if not (scratch / data).exists():
            try:
                os.link(folder / data, scratch / data)
            except OSError:
                shutil.copyfile(folder / data, scratch / data)
    onnx.save(proto, str(scratch / "model.onnx"))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(scratch / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    decoder = _read_json(folder / "genai_config.json").get("model", {}).get("decoder", {})
    kv = (int(decoder.get("num_key_value_heads", 0)), int(decoder.get("head_size", 0)))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    sums: dict[str, np.ndarray] = {}
    products: dict[str, np.ndarray] = {}
    count = 0
    for ids in calibration_windows(tokenizer):
        feed = {item.name: _input_value(item, ids, kv) for item in session.get_inputs()}
        outputs = session.run(inputs, feed)
        for name, value in zip(inputs, outputs, strict=True):
            flat = np.asarray(value, dtype=np.float64).reshape(-1, value.shape[-1])
            sums[name] = sums.get(name, 0.0) + (flat * flat).sum(axis=0)
            if hessian:
                products[name] = products.get(name, 0.0) + flat.T @ flat
        count += len(ids)
    del session
    shutil.rmtree(scratch, ignore_errors=True)
    return Activations(
        {name: (total / count).astype(np.float32) for name, total in sums.items()},
        {name: total / count for name, total in products.items()},
    )
