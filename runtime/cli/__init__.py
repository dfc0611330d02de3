"""The `foundry` command: a lazy click group that renders every FoundryError as one line.

Imports only click and the stdlib at module level so `foundry --help` and
`foundry service status` start fast; each subgroup is imported when it is invoked.
`FoundryGroup` is also the root of `foundry-build`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from runtime import __version__
from runtime.errors import FoundryError
from runtime.settings import ENV_VARS, keep_private

__all__ = ["API_KEY_ARG_ENV", "FoundryGroup", "main", "render_error"]

API_KEY_ARG_ENV = "FOUNDRY_CLI_API_KEY"
"""Private: `--api-key`'s value once `hide_api_key` has moved it out of the command line."""


def render_error(exc: FoundryError) -> None:
    """The CLI's only error output: `error: <message>` and `hint: <hint>` on stderr."""
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)


class FoundryGroup(click.Group):
    """A group whose subcommands are imported on first use and whose errors are one line."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            module_name, attr = self.lazy_subcommands[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if ctx.parent is None:
            with formatter.section("Environment variables"):
                formatter.write_dl(sorted(ENV_VARS.items()))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FoundryError as exc:
            if os.environ.get("FOUNDRY_DEBUG") == "1":
                raise
            render_error(exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if os.environ.get("FOUNDRY_DEBUG") == "1":
                raise
            click.echo("aborted", err=True)
            ctx.exit(130)


def hide_api_key(argv: list[str]) -> None:
    """Re-exec `foundry service ...` without `--api-key VALUE` in its argv, the value moved to
    API_KEY_ARG_ENV (the option reads it from there, so its precedence is unchanged).

    Any user can read /proc/PID/cmdline (what `ps` shows); environ is the owner's alone, and
    `service start` waits seconds for the service with the key on its command line otherwise.
    """
    if argv[:1] != ["service"]:
        return
    kept: list[str] = []
    key: str | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--":
            kept += [arg, *args]
        elif arg == "--api-key" and (value := next(args, None)) is not None:
            key = value
        elif arg.startswith("--api-key="):
            key = arg.partition("=")[2]
        else:
            kept.append(arg)
    if key is None:
        return
    os.environ[API_KEY_ARG_ENV] = key
    interpreter = sys.orig_argv[: len(sys.orig_argv) - len(argv)]  # python [-m mod | script]
    os.execv(sys.executable, [*interpreter, *kept])


@click.group(
    cls=FoundryGroup,
    lazy_subcommands={
        "model": "runtime.cli.model:group",
        "service": "runtime.cli.service:group",
        "cache": "runtime.cli.cache:group",
        "console": "runtime.cli.service:console",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="foundry")
def main() -> None:
    """Run AI models locally: manage the catalog and cache, serve the OpenAI API."""
    keep_private()
    hide_api_key(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
