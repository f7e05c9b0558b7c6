"""Write the CLI reference page: every `fsml` command's --help, as the installed app prints it.

Usage: python scripts/cli_reference.py OUT.md
Generated at build time from the typer app, so the page cannot drift from the code.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from fsml_nb.cli import app

HELP_ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}


def command_paths(command: typer.core.TyperCommand | typer.core.TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    "Every command and group under `command`, depth first, in the order --help lists them."
    found = [path]
    if hasattr(command, "list_commands"):  # a group (typer vendors its own click)
        context = typer.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not sub.hidden:
                found.extend(command_paths(sub, (*path, name)))
    return found


def help_text(path: tuple[str, ...]) -> str:
    "What `fsml PATH --help` prints."
    result = CliRunner().invoke(app, [*path, "--help"], env=HELP_ENV, prog_name="fsml")
    if result.exit_code != 0:
        raise SystemExit(f"cli_reference: `fsml {' '.join(path)} --help` exited {result.exit_code}:\n{result.output}")
    return result.output.rstrip()


def reference_markdown() -> str:
    "The whole page: one section per command, its help in a code block."
    paths = command_paths(typer.main.get_command(app))
    lines = ["# CLI reference", "",
             "Every `fsml` command's `--help`, generated from the typer app when the site is built.", ""]
    for path in paths:
        lines += ["", f'## fsml {" ".join(path)} {{#{anchor(path)}}}'.replace("fsml  {", "fsml {"), "",
                  "```text", help_text(path), "```"]
    return "\n".join(lines) + "\n"


def anchor(path: tuple[str, ...]) -> str:
    "A stable anchor for a command's section."
    return "-".join(("fsml", *path))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2])
    os.environ.update(HELP_ENV)
    Path(sys.argv[1]).write_text(reference_markdown())
