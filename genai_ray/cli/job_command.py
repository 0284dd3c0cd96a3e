"""Check a command before it is submitted as a Ray Job: parse it exactly as the job will, without running it.

It lives in the CLI layer because it parses with the CLI's own click commands; ``genai_ray.cluster.jobs`` only
submits what this has accepted.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import click

from genai_ray.errors import UserError

# genai_ray.cli is imported inside validate_command: it imports this module (through cli/cluster.py), a cycle at
# import time otherwise.

NOT_JOBS = ("submit", "jobs", "cluster")  # commands that manage the cluster from your machine


def validate_command(args: Sequence[str]) -> str:
    """The command path ("data prepare") of ``genai-ray ARGS``; raises ``UserError`` for unknown commands,
    unknown options and missing arguments, before anything is submitted."""
    from genai_ray.cli import cli

    if not args:
        raise UserError("no command to submit; put it after '--', e.g. genai-ray submit -- data prepare digits")
    command: click.Command = cli
    ctx: click.Context | None = None
    rest, path = list(args), []
    try:
        while True:
            ctx = command.context_class(command, info_name=path[-1] if path else "genai-ray", parent=ctx)
            group = isinstance(command, click.Group)
            if group and not rest:
                _missing_command(path, ctx)
            with ctx.scope(cleanup=False):
                # click.Command's parse_args, not Group's: it returns the subcommand with its arguments, where
                # Group's would hide the subcommand's name in a private attribute.
                rest = click.Command.parse_args(command, ctx, rest)
            if not group:
                return " ".join(path)
            if not rest:  # only the group's own options
                _missing_command(path, ctx)
            name, sub, rest = command.resolve_command(ctx, rest)
            if name in NOT_JOBS and not path:
                raise UserError(f"'{name}' manages the cluster from your machine; it cannot run as a job")
            assert name is not None and sub is not None  # resolve_command raises for unknown names
            path.append(name)
            command = sub
    except click.UsageError as err:
        raise UserError(f"cannot submit 'genai-ray {shlex.join(args)}': {err.format_message()}") from None


def _missing_command(path: list[str], ctx: click.Context) -> None:
    """One line instead of click's answer to a bare group, its whole help text."""
    where = shlex.join(["genai-ray", *path])
    raise click.UsageError(f"'{where}' needs a command; '{where} --help' lists them", ctx)
