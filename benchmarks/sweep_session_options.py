"""The chat batch's bare decode step under onnxruntime session options, alternated round by round.

    python benchmarks/sweep_session_options.py --home HOME --model smollm2 [--rounds 3]

Each option set gets a fresh ChatEngine whose batch session is made with the set added to
threads.ort_session_options; `ceiling.raw_steps` then times 64 bare decode runs at B = 1
and 4 rows. Spinning is forced on (FOUNDRY_SPIN=on) unless the environment says otherwise.
Prints JSON: medians per option set, and every reading with the others' CPU share.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench_peers import OthersCpu, prompt_text
from ceiling import raw_steps

OPTION_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "dynamic_block_4": {"session.dynamic_block_base": "4"},
    "no_arena": {"enable_cpu_mem_arena": False},
    "denormal_zero": {"session.set_denormal_as_zero": "1"},
    "dynamic_block_1": {"session.dynamic_block_base": "1"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("FOUNDRY_SPIN", "on")
    import runtime.engines.batch as batch
    from runtime.engines.chat import ChatEngine
    from runtime.engines.threads import ort_session_options
    from runtime.store import Store
    from runtime.store.metadata import ModelMetadata

    artifact = Store(args.home / "cache").resolve(args.model).path
    readings: dict[str, list[dict]] = {name: [] for name in OPTION_SETS}
    for _ in range(args.rounds):
        for name, extra in OPTION_SETS.items():

            def options(threads: Any, extra: dict[str, Any] = extra) -> Any:
                made = ort_session_options(threads)
                for key, value in extra.items():
                    if key.startswith("session."):
                        made.add_session_config_entry(key, value)
                    else:
                        setattr(made, key, value)
                return made

            batch.ort_session_options = options  # type: ignore[assignment]
            engine = ChatEngine(artifact, ModelMetadata(), model_id=args.model)
            prompt = engine.encode(prompt_text(100, 1))
            with OthersCpu() as others:
                tps = {
                    rows: raw_steps(engine, prompt, rows, 64)["aggregate_tps"] for rows in (1, 4)
                }
            engine.close()
            readings[name].append({"tps_1": tps[1], "tps_4": tps[4], **others.figures})
    medians = {
        name: {key: round(statistics.median(r[key] for r in rows), 1) for key in ("tps_1", "tps_4")}
        for name, rows in readings.items()
    }
    print(json.dumps({"model": args.model, "medians": medians, "readings": readings}, indent=2))


if __name__ == "__main__":
    main()
