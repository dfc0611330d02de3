"""Registry as the shared cache, at real size: Qwen2.5-0.5B dimensions (random weights), cpu-int4.

Side by side in one run, against Debian's docker-registry on loopback (tests/registry_server.py):
  * compile from source into a fresh FOUNDRY_HOME (what every machine did before this);
  * push to an empty registry (throughput), then push again (bytes sent: blobs are HEADed first),
    then to another repository of it (blobs mounted from the first, not uploaded);
  * pull into another fresh FOUNDRY_HOME (transfer throughput, then the import-grade validation);
  * first served token from each home's artifact (load in onnxruntime-genai + one greedy token),
    so pull-then-serve and compile-then-serve compare end to end.
Prints one JSON object. Usage:
    python benchmarks/bench_remote_cache.py [--reuse-bench-home]
`compile_s` is the build's own record (convert + validate + pack, as `foundry-build` reports it);
making the random-weight checkpoint first (a stand-in for downloading one) is reported apart.
`--reuse-bench-home` skips the build (several minutes) and uses benchmarks/common.py's BENCH_HOME.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import BENCH_HOME, SYNTHETIC_ID, synthetic_model, timed_greedy
from registry_server import registry_available, start_registry


def first_token_s(path: Path) -> float:
    """Load the artifact in onnxruntime-genai and produce one greedy token."""
    import onnxruntime_genai as og

    started = time.perf_counter()
    model = og.Model(str(path))
    tokenizer = og.Tokenizer(model)
    timed_greedy(model, tokenizer.encode("Hello, who are you?"), 1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse-bench-home", action="store_true")
    args = parser.parse_args()
    if not registry_available():
        sys.exit("docker-registry is not installed: apt-get install -y docker-registry")

    from runtime.oci.reference import Reference
    from runtime.oci.transfer import pull, push
    from runtime.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    builder_home = BENCH_HOME if args.reuse_bench_home else work / "builder"
    started = time.perf_counter()
    built = synthetic_model(home=builder_home)
    with_source_s = None if args.reuse_bench_home else time.perf_counter() - started
    compile_s = float(
        built.metadata.get("seconds", 0.0)
    )  # the build's own record: convert+validate
    size = built.size

    registry = start_registry(work / "registry")
    try:
        ref = Reference.parse(registry.url("team/models", "v1"))
        builder = Store(builder_home / "cache")
        t0 = time.perf_counter()
        first = push(builder, SYNTHETIC_ID, ref)
        push_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = push(builder, SYNTHETIC_ID, ref)
        second_push_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        mounted = push(builder, SYNTHETIC_ID, Reference.parse(registry.url("team/release", "v1")))
        mount_push_s = time.perf_counter() - t0

        marks: dict[str, float] = {}

        def progress(event) -> None:  # the first validate event ends the transfer
            marks.setdefault(event.phase, time.perf_counter())

        import os

        os.environ["FOUNDRY_HOME"] = str(work / "laptop")
        t0 = time.perf_counter()
        pulled = pull(Store(work / "laptop" / "cache"), ref, progress)
        pull_s = time.perf_counter() - t0
        transfer_s = marks.get("validate", t0 + pull_s) - t0
    finally:
        registry.stop()

    serve_pulled_s = first_token_s(pulled.model.path)
    serve_built_s = first_token_s(built.path)
    mb = size / 1e6
    print(
        json.dumps(
            {
                "artifact": SYNTHETIC_ID,
                "artifact_mb": round(mb, 1),
                "blobs": len(built.manifest.files),
                "compile_s": round(compile_s, 1),
                "compile_measured_here": not args.reuse_bench_home,
                "synthesize_source_and_compile_s": with_source_s and round(with_source_s, 1),
                "push_s": round(push_s, 3),
                "push_mb_per_s": round(mb / push_s, 1),
                "push_sent_bytes": first.sent_bytes,
                "second_push_s": round(second_push_s, 3),
                "second_push_sent_bytes": second.sent_bytes,
                "second_push_uploaded_blobs": second.uploaded_blobs,
                "push_to_another_repo_s": round(mount_push_s, 3),
                "push_to_another_repo_mounted_blobs": mounted.mounted_blobs,
                "push_to_another_repo_uploaded_blobs": mounted.uploaded_blobs,
                "push_to_another_repo_sent_bytes": mounted.sent_bytes,
                "pull_s": round(pull_s, 3),
                "pull_transfer_s": round(transfer_s, 3),
                "pull_transfer_mb_per_s": round(mb / transfer_s, 1),
                "pull_validate_s": round(pull_s - transfer_s, 3),
                "first_token_after_pull_s": round(serve_pulled_s, 3),
                "first_token_after_compile_s": round(serve_built_s, 3),
                "pull_then_serve_s": round(pull_s + serve_pulled_s, 2),
                "compile_then_serve_s": round(compile_s + serve_built_s, 2),
                "compile_vs_pull_ratio": round(
                    (compile_s + serve_built_s) / (pull_s + serve_pulled_s), 1
                ),
                "same_manifest_digest": pulled.model.manifest_digest == built.manifest_digest,
                "note": "loopback registry on a shared 2-core machine; compare ratios within a run",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
