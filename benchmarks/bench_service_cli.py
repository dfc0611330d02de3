"""How fast the CLI answers what Foundry Local's SDK asks ten times a second while waiting.

Runs, alternately in one loop: a bare `python -c pass` (the floor), `foundry --help`,
`foundry service status` with no service, and `foundry service status` against a running
service; then a launch of the service process to its first /health answer. Prints JSON with
medians and ratios to the bare interpreter. Temp FOUNDRY_HOME; the service is stopped at the end.

    .venv/bin/python benchmarks/bench_service_cli.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FOUNDRY = str(Path(sys.executable).with_name("foundry"))


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - started


def start_to_health(env: dict[str, str], home: Path) -> float:
    """Spawn the service process; seconds until /health answers (as `service start` polls)."""
    from runtime.cli.service import _probe

    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.service.launcher"],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            state_file = home / "service.json"
            if state_file.exists():
                port = json.loads(state_file.read_text())["port"]
                if _probe(f"http://127.0.0.1:{port}", "/health"):
                    return time.perf_counter() - started
            if process.poll() is not None:
                raise SystemExit("the service exited while starting")
            time.sleep(0.01)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    idle_home, busy_home = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    idle_env = {**os.environ, "FOUNDRY_HOME": str(idle_home)}
    busy_env = {**os.environ, "FOUNDRY_HOME": str(busy_home)}
    subprocess.run(
        [FOUNDRY, "service", "start"], env=busy_env, check=True, stdout=subprocess.DEVNULL
    )
    cases = {
        "python_bare": ([sys.executable, "-c", "pass"], idle_env),
        "foundry_help": ([FOUNDRY, "--help"], idle_env),
        "status_not_running": ([FOUNDRY, "service", "status"], idle_env),
        "status_running": ([FOUNDRY, "service", "status"], busy_env),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(args.rounds):
            for name, (command, env) in cases.items():
                samples[name].append(timed(command, env))
    finally:
        subprocess.run(
            [FOUNDRY, "service", "stop"], env=busy_env, check=False, stdout=subprocess.DEVNULL
        )
    starts = [start_to_health(idle_env, idle_home) for _ in range(3)]
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "median_s": {name: round(value, 4) for name, value in medians.items()},
                "ratio_to_bare_python": {
                    name: round(value / medians["python_bare"], 2)
                    for name, value in medians.items()
                },
                "service_start_to_health_s": {
                    "median": round(statistics.median(starts), 3),
                    "runs": [round(s, 3) for s in starts],
                },
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
