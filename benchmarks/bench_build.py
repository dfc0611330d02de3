"""Build cost at real size: a synthetic checkpoint with Qwen2.5-0.5B's real dimensions at cpu-int4.

Measures, side by side in one run (each conversion in its own process so peak RSS is its own):
  * the bare onnxruntime-genai builder (backend `genai-builder`) vs the Olive workflow
    (backend `olive`: our builder pass + the recipe's passes): wall time, peak RSS, artifact size;
  * the full `foundry-build` (conversion + validation + pack + register) and its second run,
    which must be a cache hit.
Conversions alternate (--rounds, default 2) and the least disturbed run of each is kept, since
the machine may be shared. Prints one JSON object. Usage:
    python benchmarks/bench_build.py [--rounds N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ALIAS = "qwen2.5-0.5b"
TARGET = "cpu-int4"


def child(backend: str, source: str, out: str) -> None:
    """Run one backend conversion in this process and print its cost."""
    from compiler.backends import load_backend
    from compiler.backends.base import captured_output
    from compiler.build import replace_backend
    from compiler.recipe import pick
    from compiler.source import load_folder

    src = load_folder(Path(source))
    _, _, target = pick(src.config, "chat", TARGET)
    target = replace_backend(target, backend)
    out_dir = Path(out)
    started = time.perf_counter()
    with captured_output(out_dir.parent / f"{backend}.log", lambda event: None):
        load_backend(backend).run(src, target, out_dir, lambda event: None)
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps({"seconds": round(seconds, 2), "peak_rss_bytes": peak, "artifact_bytes": size})
    )


def run_child(backend: str, source: Path, work: Path) -> dict:
    out = work / f"out-{backend}"
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, __file__, "--child", backend, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "FOUNDRY_HOME": str(work / "home")},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_cli(home: Path, source: Path) -> tuple[float, dict]:
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "foundry-build"), str(source), "--target", TARGET, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return time.perf_counter() - started, json.loads(done.stdout)["models"][0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "SOURCE", "OUT"))
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per backend")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work folder to keep (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from compiler.synthetic import synthetic_source

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = work / "checkpoint"
        if not (source / "config.json").exists():
            synthetic_source(ALIAS, source)  # real dimensions, seeded random weights
        source_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        runs: dict[str, list[dict]] = {"genai-builder": [], "olive": []}
        for _ in range(args.rounds):  # alternate, keep the least disturbed run of each
            for backend in runs:
                runs[backend].append(run_child(backend, source, work))
        builder = min(runs["genai-builder"], key=lambda r: r["seconds"])
        olive = min(runs["olive"], key=lambda r: r["seconds"])
        full_seconds, first = run_cli(work / "home", source)
        hit_seconds, second = run_cli(work / "home", source)
        record = json.loads((Path(first["path"]) / "build.json").read_text())
        result = {
            "model": f"synthetic {ALIAS} (real dimensions, random weights)",
            "target": TARGET,
            "source_bytes": source_bytes,
            "rounds": args.rounds,
            "genai_builder": builder,
            "olive": olive,
            "all_runs_seconds": {k: [r["seconds"] for r in v] for k, v in runs.items()},
            "olive_over_builder": {
                "seconds_ratio": round(olive["seconds"] / builder["seconds"], 3),
                "peak_rss_ratio": round(olive["peak_rss_bytes"] / builder["peak_rss_bytes"], 3),
                "artifact_bytes_ratio": round(
                    olive["artifact_bytes"] / builder["artifact_bytes"], 3
                ),
            },
            "foundry_build": {
                "wall_seconds": round(full_seconds, 2),
                "build_seconds": record["seconds"],
                "peak_rss_bytes": record["peak_rss_bytes"],
                "validation": first["validation"],
                "cache_hit": first["cache_hit"],
            },
            "second_run": {
                "cache_hit": second["cache_hit"],
                "build_seconds": second["seconds"],  # inside the process: key lookup -> result
                "wall_seconds": round(
                    hit_seconds, 2
                ),  # includes interpreter start and source hashing
            },
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
