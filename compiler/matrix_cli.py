"""`foundry-build --matrix FILE.yaml` (also `foundry-build matrix FILE.yaml`): the command.

The pipeline lives in `compiler/matrix.py`; this module only parses options, writes the report
and prints the table. Imports click and the stdlib at module level.
"""

from __future__ import annotations

from pathlib import Path

import click

from runtime.cli.output import emit_json, human_size, print_table

__all__ = ["matrix_command"]


@click.command("matrix")
@click.argument("matrix_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--remote",
    default=None,
    metavar="oci://HOST/REPO",
    help="Registry every entry looks its build key up in and pushes to (overrides the file's).",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("matrix-report.json"),
    show_default=True,
    help="Where to write the JSON report.",
)
@click.option("--json", "as_json", is_flag=True, help="Also print the report on stdout.")
def matrix_command(matrix_file: Path, remote: str | None, report: Path, as_json: bool) -> None:
    """Build every source x target of MATRIX_FILE, go on past failures, write one JSON report."""
    import msgspec

    from compiler.matrix import MatrixFailed, load_matrix, run_matrix
    from runtime.cli.output import ProgressRenderer
    from runtime.oci.reference import Reference
    from runtime.store import Store

    matrix = load_matrix(matrix_file)
    address = remote or matrix.remote
    ref = Reference.parse(address) if address else None
    with ProgressRenderer(enabled=not as_json, lines=False) as view:
        result = run_matrix(matrix, matrix_file.name, Store(), ref, view)
    report.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")
    if as_json:
        emit_json(result)
    else:
        print_table(
            ["model", "target", "status", "seconds", "peak memory", "note"],
            [
                [
                    e.model,
                    e.target,
                    e.status,
                    f"{e.seconds:.1f}",
                    human_size(e.peak_rss_bytes or 0),
                    e.error or e.id or "",
                ]
                for e in result.entries
            ],
        )
        click.echo(f"report: {report}")
    if result.failed:
        raise MatrixFailed(
            f"{result.failed} of {len(result.entries)} matrix entries failed (see {report})",
            hint="each failed entry's error is in the report; fix it and run again (done entries are cache hits)",
        )
