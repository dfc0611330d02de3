"""A build matrix of 2 models x 3 targets: cold, warm on the same machine, warm on a new machine.

Runs `foundry-build --matrix` (the command CI runs) three times in one go, against Debian's
docker-registry on loopback: cold (empty cache and registry: everything compiles and is pushed),
warm (same FOUNDRY_HOME: every entry a local cache hit), and warm on a fresh FOUNDRY_HOME (every
entry a remote hit: pulled, verified and validated instead of compiled). Sources are the real
architectures of two catalog aliases shrunk to LAYERS x HIDDEN with random weights, so the run
fits a shared 2-core machine; say so beside the figures. Prints one JSON object. Usage:
    python benchmarks/bench_matrix.py [--layers 2 --hidden 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from registry_server import registry_available, start_registry

BIN = Path(sys.executable).parent
ALIASES = ["qwen2.5-0.5b", "llama-3.2-1b"]
TARGETS = ["cpu-int4", "cpu-int8", "cpu-fp32"]


def run(matrix: Path, home: Path, report: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "foundry-build"), "--matrix", str(matrix), "--report", str(report), "--json"],
        env={**os.environ, "FOUNDRY_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return seconds, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    if not registry_available():
        sys.exit("docker-registry is not installed: apt-get install -y docker-registry")
    work = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    registry = start_registry(work / "registry")
    try:
        matrix = work / "matrix.yaml"
        sources = "".join(
            f"  - model: {alias}\n    synthetic: true\n    layers: {args.layers}\n"
            f"    hidden: {args.hidden}\n    id: bench-{alias}\n"
            for alias in ALIASES
        )
        matrix.write_text(
            f"schema: 1\nremote: {registry.url('team/cache')}\n"
            f"targets: [{', '.join(TARGETS)}]\nsources:\n{sources}"
        )
        cold_s, cold = run(matrix, work / "ci-runner", work / "cold.json")
        warm_s, warm = run(matrix, work / "ci-runner", work / "warm.json")
        fresh_s, fresh = run(matrix, work / "new-runner", work / "fresh.json")
    finally:
        registry.stop()

    def statuses(report: dict) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in report["entries"]:
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        return counts

    print(
        json.dumps(
            {
                "entries": len(cold["entries"]),
                "models": ALIASES,
                "targets": TARGETS,
                "shape": f"{args.layers} layers x hidden {args.hidden}, random weights",
                "cold_s": round(cold_s, 1),
                "cold": statuses(cold),
                "warm_same_home_s": round(warm_s, 1),
                "warm_same_home": statuses(warm),
                "warm_new_home_s": round(fresh_s, 1),
                "warm_new_home": statuses(fresh),
                "cold_vs_warm_same_home": round(cold_s / warm_s, 1),
                "cold_vs_warm_new_home": round(cold_s / fresh_s, 1),
                "note": "wall time of the whole foundry-build --matrix process (start-up included); "
                "shared 2-core machine: compare ratios within a run",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
