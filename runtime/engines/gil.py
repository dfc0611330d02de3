"""Keep the event loop alive beside onnxruntime-genai 0.18's og.Generator.

0.18's og.Generator holds the GIL through `append_tokens` and `generate_next_token`
(og.Engine.run does not), so a generator thread starves the event loop and every other stream:
/health took 17.8 s during a 2,749-token prefill (Qwen2.5-0.5B-dimension int4), and 15 s while a
tiny model decoded with ignore_eos (a 50-chunk stream took as long). Prefill therefore goes in
chunks and every step gives up the GIL for a moment; both are measured below. Never imports
onnxruntime_genai itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["FIRST_TOKEN_YIELD_S", "PREFILL_CHUNK", "append_in_chunks", "let_the_loop_run"]

# Chunks of 64: /health 17.8 s -> 1.2-1.4 s during that prefill; same tokens; prefill +2-3 %
# at 330 tokens; a cancel is seen between chunks.
PREFILL_CHUNK = 64
# After the first token a chunk reaches the client only after the *next* step unless the thread
# lets go a little longer (first content, 16-token prompt: 311/322 ms vs 325/337 ms without).
FIRST_TOKEN_YIELD_S = 0.002


def let_the_loop_run(first_token: bool = False) -> None:
    """Release the GIL between steps (sleep(0) is a syscall: microseconds per token).

    Without it a tiny model's decode kept /health waiting 15 s; with it, 0.02-0.05 s.
    """
    time.sleep(FIRST_TOKEN_YIELD_S if first_token else 0)


def append_in_chunks(
    generator: Any, tokens: Any, is_cancelled: Callable[[], bool], chunk: int = PREFILL_CHUNK
) -> None:
    """`generator.append_tokens(tokens)` in chunks, letting the loop run and stopping on cancel."""
    for start in range(0, len(tokens), chunk):
        if is_cancelled():
            return
        generator.append_tokens(tokens[start : start + chunk])
        let_the_loop_run()
