"""The ``genai-ray`` command. Thin: it parses flags and calls the library.

User mistakes (``UserError``) print one line and exit 2. Unexpected errors print one line and exit 1;
``--verbose`` shows the traceback, and TensorFlow's and Ray's start-up logs, which the command hides otherwise.
SIGINT and SIGTERM stop a command with one line and end the private Ray it started (``genai_ray.stops``).
"""

from __future__ import annotations

import sys
import traceback

import click

from genai_ray import __version__, stops
from genai_ray.cli import cluster as cluster_cli
from genai_ray.cli import data, keys
from genai_ray.cli import evaluate as evaluate_cli
from genai_ray.cli import serve as serve_cli
from genai_ray.cli import train as train_cli
from genai_ray.cli import tune as tune_cli
from genai_ray.errors import UserError
from genai_ray.quiet import install as install_quiet
from genai_ray.storage import default_store


class Context:
    def __init__(self, verbose: bool, store: str | None):
        self.verbose = verbose
        self._store = store

    @property
    def store(self) -> str:
        return self._store or default_store()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="genai-ray")
@click.option("--verbose", "-v", is_flag=True,
              help="Show details, full tracebacks, and TensorFlow's and Ray's start-up logs.")
@click.option("--store", envvar="GENAI_RAY_STORE", default=None, metavar="URI",
              help="Store root (local folder or s3://bucket/prefix). Default: $GENAI_RAY_STORE or ~/.genai-ray/store.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, store: str | None) -> None:
    """genai-ray: train, evaluate, tune and serve GANs on Ray."""
    ctx.obj = Context(verbose, store)


def _register() -> None:
    cli.add_command(data.data)
    cli.add_command(serve_cli.serve)
    cli.add_command(cluster_cli.cluster)
    cli.add_command(cluster_cli.submit)
    cli.add_command(cluster_cli.jobs_group, name="jobs")
    cli.add_command(evaluate_cli.evaluate_cmd)
    cli.add_command(train_cli.train)
    cli.add_command(train_cli.generate)
    cli.add_command(tune_cli.tune_cmd)
    cli.add_command(tune_cli.promote_cmd)
    cli.add_command(keys.key_hash)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point with clean error handling."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    # The console command owns its process's streams; a caller passing argv (tests, scripts) keeps its own.
    quiet = install_quiet(verbose) if argv is None else None
    try:
        if argv is None:  # the console command owns its signals too: SIGINT and SIGTERM stop it in one line
            return stops.run(lambda: _run(args, verbose), verbose)
        return _run(args, verbose)
    finally:
        if quiet is not None:
            _end_ray()  # Ray streams its workers' lines until it shuts down: through the filter, not after it
            quiet.close()


def _end_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _run(args: list[str], verbose: bool) -> int:
    try:
        # Without standalone mode click *returns* the code of ctx.exit(code) instead of raising Exit.
        code = cli.main(args=args, prog_name="genai-ray", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except UserError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if verbose:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"error: {type(exc).__name__}: {first[:300]} (run with --verbose for details)", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
