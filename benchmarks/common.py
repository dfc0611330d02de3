"""What several benchmarks share: the synthetic model they run on, and a timed greedy decode.

Scripts run as `python benchmarks/bench_x.py`, so `benchmarks/` is on `sys.path` and they
`from common import ...`. One place builds the artifact (so every benchmark measures the same
files, built once into one private FOUNDRY_HOME) and one place times an og.Generator (so
"time to first token" and "decode tok/s" mean the same thing in every script's JSON).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime_genai as og

# The benchmarks' own FOUNDRY_HOME: kept between runs so the ~2 min build happens once.
BENCH_HOME = Path(
    os.environ.get("BENCH_HOME", Path.home() / ".cache" / "foundry-bench" / "serve-home")
)
SYNTHETIC_ID = "bench-qwen2.5-0.5b-int4"


def synthetic_model(
    home: Path = BENCH_HOME,
    model_id: str = SYNTHETIC_ID,
    target: str = "cpu-int4",
    builder: dict[str, Any] | None = None,
) -> Any:
    """The Qwen2.5-0.5B-dimension synthetic model (real sizes, random weights), as a CachedModel.

    What `foundry-build qwen2.5-0.5b --synthetic --target TARGET --as MODEL_ID` registers in
    FOUNDRY_HOME=`home`, built in-process by the same compiler functions. `builder` overrides
    options of the recipe target's builder (e.g. `{"prune_lm_head": False}`); that changes the
    build key, so it is a separate artifact. A model id already in the store is reused as is;
    otherwise an unchanged build key is a cache hit (registered under the new id, not rebuilt).
    """
    from runtime.store import Store

    store = Store(home / "cache")
    if not store.has(model_id):
        with _foundry_home(home):
            _build(store, model_id, target, builder or {})
    return store.resolve(model_id)


def _build(store: Any, model_id: str, target_name: str, builder: dict[str, Any]) -> None:
    import msgspec

    from compiler.build import BuildPlan, BuildRequest, build_target, open_source, plan_target
    from compiler.build_key import build_key
    from compiler.pack import tool_versions
    from compiler.recipe import load_recipes
    from runtime.progress import silent

    request = BuildRequest("qwen2.5-0.5b", [target_name], model_id=model_id, synthetic=True)
    with open_source(request, store, silent) as source:
        plan = plan_target(request, source, target_name, load_recipes(), store)
        if builder:
            options = dict(plan.target.options)
            options["builder"] = {**options.get("builder", {}), **builder}
            target = msgspec.structs.replace(plan.target, options=options)
            key = build_key(source.digest, plan.recipe.recipe.name, target, tool_versions())
            plan = BuildPlan(model_id, plan.target_name, target, plan.recipe, key, False)
        started = time.perf_counter()
        result = build_target(plan, source, store, silent)
    how = "cache hit" if result.cache_hit else "built"
    print(f"{how} {model_id} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


@contextlib.contextmanager
def _foundry_home(home: Path) -> Iterator[None]:
    """The compiler reads FOUNDRY_HOME (e.g. its file-digest cache) at call time."""
    before = os.environ.get("FOUNDRY_HOME")
    os.environ["FOUNDRY_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FOUNDRY_HOME", None)
        else:
            os.environ["FOUNDRY_HOME"] = before


def timed_greedy(
    model: og.Model,
    prompt: Sequence[int] | np.ndarray,
    tokens: int,
    params_hook: Callable[[og.GeneratorParams], None] | None = None,
    *,
    fixed_length: bool = True,
    since: float | None = None,
) -> dict[str, float]:
    """One greedy generation of up to `tokens` tokens on a fresh og.Generator, timed.

    `prompt` is token ids (list or int32 array). The clock starts at `since` if given (e.g. a
    request's arrival, so waiting for the GIL counts), else right before the prompt is appended;
    the first `generate_next_token` ends the time to first token; the rest is decode.
    `fixed_length` sets min_length so EOS cannot end the run early; `params_hook` may change the
    params (e.g. set guidance) before the generator is created.
    Returns ttft_s, decode_s, decode_tps (tokens after the first per decode second), tokens.
    """
    params = og.GeneratorParams(model)
    total = len(prompt) + tokens
    if fixed_length:
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
    else:
        params.set_search_options(do_sample=False, max_length=total)
    if params_hook:
        params_hook(params)
    generator = og.Generator(model, params)
    start = time.perf_counter() if since is None else since
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    generator.generate_next_token()
    first = time.perf_counter()
    produced = 1
    while not generator.is_done() and produced < tokens:
        generator.generate_next_token()
        produced += 1
    decode = time.perf_counter() - first
    return {
        "ttft_s": first - start,
        "decode_s": decode,
        "decode_tps": (produced - 1) / decode if decode > 0 else 0.0,
        "tokens": produced,
    }
