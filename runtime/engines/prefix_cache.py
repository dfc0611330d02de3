"""What prefix reuse (kept_kv.py) and the KV budget share: bytes per token, the budget, the
longest common prefix, and why reuse stops at an even offset (ROW_ALIGNMENT).

The kept-og.Generator cache that lived here (rewind a kept generator to the common prefix,
append the rest) was removed with the og strategies in issue 13: the continuous batch keeps a
finished prompt's KV itself (kept_kv.py), and it gives the same tokens.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_BUDGET_BYTES", "ROW_ALIGNMENT", "common_prefix", "kv_bytes_per_token"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 512 * 1024 * 1024
BUDGET_ENV = "FOUNDRY_PREFIX_CACHE_MB"  # 0 turns prefix reuse off
# int4 (MatMulNBits) prefill computes rows in pairs; an odd row left over takes another kernel
# whose results differ (0.14 in the logits of a 0.5B model). Measured: splitting a 1,274-token
# prefill at any even offset gave logits identical to one pass (0.0 difference), at any odd
# offset 0.13-0.15 off; a token generated one at a time is such a lone row. So reuse covers
# only rows a prefill computed in pairs from an even start, and resumes at an even offset.
ROW_ALIGNMENT = 2


def kv_bytes_per_token(artifact: Path) -> int:
    """KV-cache bytes one token costs in this artifact (keys + values, every layer)."""
    genai = json.loads((artifact / "genai_config.json").read_text(encoding="utf-8"))
    decoder = genai["model"]["decoder"]
    heads = int(decoder.get("num_key_value_heads") or decoder["num_attention_heads"])
    width = 2 if "fp16" in json.dumps(decoder.get("session_options", {})).lower() else 4
    return 2 * int(decoder["num_hidden_layers"]) * heads * int(decoder["head_size"]) * width


def budget_from_env() -> int:
    """The byte budget: `FOUNDRY_PREFIX_CACHE_MB` if set (0 = off), else 512 MiB."""
    value = os.environ.get(BUDGET_ENV)
    if value is None or not value.strip():
        return DEFAULT_BUDGET_BYTES
    try:
        return max(0, int(float(value) * 1024 * 1024))
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", BUDGET_ENV, value)
        return DEFAULT_BUDGET_BYTES


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    limit = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:limit]) != np.asarray(b[:limit]))
    return int(diff[0]) if len(diff) else limit
