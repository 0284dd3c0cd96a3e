"""``genai-ray cluster up|down|status``, ``genai-ray submit -- <command>`` and ``genai-ray jobs ...``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from genai_ray.cli.job_command import validate_command
from genai_ray.cluster import auth, jobs, local
from genai_ray.errors import UserError

ADDRESS_HELP = ("The cluster's dashboard / Jobs API, e.g. http://HEAD:8265. Default: $RAY_API_SERVER_ADDRESS, "
                "then the local head from 'genai-ray cluster up'.")


def _say(message: str) -> None:
    click.echo(message, err=True)


# ---- cluster ----

@click.group()
def cluster() -> None:
    """Start, stop and inspect a local Ray head for development (state in $GENAI_RAY_CLUSTER_DIR)."""


@cluster.command("up")
@click.option("--num-cpus", type=click.IntRange(min=1), help="Logical CPUs to advertise. Default: max(8, 2 x cores).")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="Interface for the dashboard and Jobs API. They run code: keep them off public networks.")
def up_cmd(num_cpus: int | None, dashboard_host: str) -> None:
    """Start a local Ray head with token auth, free ports and its own temp dir."""
    if dashboard_host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"warning: the dashboard on {dashboard_host} runs code for anyone who reaches it with the token; "
             "prefer 127.0.0.1 and an SSH tunnel")
    state, started = local.up(num_cpus=num_cpus, dashboard_host=dashboard_host)
    token = auth.find_token()
    click.echo(("started" if started else "already running") + f" local Ray head ({state.num_cpus} logical CPUs)")
    click.echo(f"  dashboard and Jobs API: {state.dashboard_url}")
    click.echo(f"  Ray address: {state.gcs_address}")
    click.echo(f"  auth token: {token.source if token else 'none found'} (token authentication is on)")
    click.echo("  submit jobs:  genai-ray submit -- data prepare digits")
    click.echo(f"  join it from plain commands and Ray's CLIs (serve deploy -a {state.dashboard_url}):")
    click.echo(f"    export RAY_AUTH_MODE=token GENAI_RAY_ADDRESS={state.gcs_address}")
    click.echo("  stop it:      genai-ray cluster down")


@cluster.command("down")
def down_cmd() -> None:
    """Stop the local Ray head and every process it started (other Rays on the machine are left alone)."""
    state, stopped = local.down()
    if state is None:
        click.echo(f"no local Ray head recorded in {local.state_dir()}; nothing to stop")
        return
    click.echo(f"stopped the local Ray head at {state.dashboard_url} ({stopped} processes)")


@cluster.command("status")
def status_cmd() -> None:
    """Say whether the local head runs, where, and what its jobs are doing."""
    state = local.read_state()
    if state is None or not local.is_running(state):
        click.echo("local Ray head: not running" + (" (stale state; 'genai-ray cluster down' clears it)"
                                                     if state else ""))
        return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.started_at))
    click.echo(f"local Ray head: running since {since}, {len(local.cluster_pids(state))} processes, "
               f"{state.num_cpus} logical CPUs")
    click.echo(f"  dashboard and Jobs API: {state.dashboard_url}")
    click.echo(f"  Ray address: {state.gcs_address}")
    click.echo(f"  Ray logs: {state.temp_dir}/session_latest/logs (removed by 'cluster down')")
    counts: dict[str, int] = {}
    for info in jobs.connect(state.dashboard_url).list_jobs():
        counts[info.status.value] = counts.get(info.status.value, 0) + 1
    click.echo("  jobs: " + (", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"))


# ---- submit ----

@click.command("submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--address", metavar="URL", help=ADDRESS_HELP)
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the job's log and exit with its result, or return once it is submitted.")
@click.option("--working-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Project folder to ship to the cluster. Default: this checkout (none when installed).")
@click.option("--no-upload", is_flag=True, help="Ship nothing: run the genai-ray installed on the cluster.")
@click.option("--job-id", help="Submission id. Default: genai-ray-<command>-<time>-<random>.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx: click.Context, address, wait, working_dir, no_upload, job_id, args) -> None:
    """Run any genai-ray command as a Ray Job: genai-ray submit [OPTIONS] -- COMMAND [ARGS]...

    The command is checked here first. Storage settings (AWS_ENDPOINT_URL, AWS_REGION, --store) go with the
    job; credentials do not: the cluster uses its own (see docs/clusters.md).
    """
    command = validate_command(args)
    if no_upload and working_dir:
        raise UserError("--no-upload and --working-dir contradict each other; pass one of them")
    root = None if no_upload else (working_dir or jobs.project_root())
    env = jobs.runtime_env(root.resolve() if root else None, ctx.find_root().params.get("store"))
    client = jobs.connect(address)
    job_id = jobs.submit(client, args, command, env, job_id)
    _say(f"submitted job {job_id} to {client.get_address()}"
         + (f" (shipping {root})" if root else " (using the cluster's installed genai-ray)"))
    if not wait:
        click.echo(job_id)
        _say(f"follow it with: genai-ray jobs logs --follow {job_id}")
        return
    try:
        jobs.follow_logs(client, job_id, lambda text: click.echo(text, nl=False))
    except KeyboardInterrupt:
        _say(f"stopped following; job {job_id} keeps running (genai-ray jobs stop {job_id} stops it)")
        ctx.exit(130)
    ctx.exit(_report(client, job_id))


def _report(client, job_id: str) -> int:
    """Print how the job ended; on failure its exit code and the tail of its log. Returns the exit code."""
    info = jobs.job_info(client, job_id)
    code = jobs.exit_code(info)
    if code == 0:
        _say(f"job {job_id} SUCCEEDED")
        return 0
    message = (info.message or "").strip().splitlines()[0:1]
    _say(f"job {job_id} {info.status.value} (exit code {code})" + (f": {message[0]}" if message else ""))
    _say(f"--- last {jobs.LOG_TAIL_LINES} lines of its log ---")
    _say(jobs.log_tail(client, job_id))
    return code


# ---- jobs ----

@click.group()
@click.option("--address", metavar="URL", help=ADDRESS_HELP)
def jobs_group(address: str | None) -> None:
    """List, inspect, follow and stop Ray Jobs."""


def _client(ctx: click.Context):
    return jobs.connect(ctx.parent.params["address"])


@jobs_group.command("list")
@click.pass_context
def list_cmd(ctx) -> None:
    """All jobs on the cluster, newest first."""
    infos = sorted(_client(ctx).list_jobs(), key=lambda i: i.start_time or 0, reverse=True)
    if not infos:
        click.echo("no jobs")
    for info in infos:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((info.start_time or 0) / 1000))
        click.echo(f"{info.submission_id or info.job_id}  {info.status.value:<9}  {started}  "
                   f"{jobs.short_entrypoint(info.entrypoint)}")


@jobs_group.command("status")
@click.argument("job_id")
@click.pass_context
def job_status_cmd(ctx, job_id: str) -> None:
    """One job's state, exit code and message. Exits non-zero when the job failed."""
    info = jobs.job_info(_client(ctx), job_id)
    click.echo(f"{job_id}: {info.status.value}")
    click.echo(f"  command: {jobs.short_entrypoint(info.entrypoint)}")
    if info.driver_exit_code is not None:
        click.echo(f"  exit code: {info.driver_exit_code}")
    if info.message:
        click.echo(f"  message: {info.message.strip().splitlines()[0]}")
    if info.status.is_terminal() and jobs.exit_code(info):
        raise click.exceptions.Exit(jobs.exit_code(info))


@jobs_group.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends; exit with its result.")
@click.pass_context
def logs_cmd(ctx, job_id: str, follow: bool) -> None:
    """Print a job's log."""
    client = _client(ctx)
    jobs.job_info(client, job_id)  # a clear error for an unknown id
    if not follow:
        click.echo(client.get_job_logs(job_id), nl=False)
        return
    jobs.follow_logs(client, job_id, lambda text: click.echo(text, nl=False))
    raise click.exceptions.Exit(_report(client, job_id))


@jobs_group.command("stop")
@click.argument("job_id")
@click.pass_context
def stop_cmd(ctx, job_id: str) -> None:
    """Stop a running job (its processes get SIGTERM, then SIGKILL)."""
    client = _client(ctx)
    info = jobs.job_info(client, job_id)
    if info.status.is_terminal():
        click.echo(f"{job_id} already ended: {info.status.value}")
        return
    client.stop_job(job_id)
    jobs.wait(client, job_id)
    click.echo(f"{job_id}: {client.get_job_status(job_id).value}")
