"""``genai-ray serve``: put a model package behind the HTTP API on Ray Serve and print its URL."""

from __future__ import annotations

import os
import time

import click

from genai_ray import stops
from genai_ray.errors import UserError
from genai_ray.ray_runtime import ADDRESS_ENV
from genai_ray.serve.app import load_serve_file, start

# Ray Serve is imported inside the functions that stop the app: `genai-ray --help` and config errors stay fast.


@click.command("serve")
@click.option("--model", "model_ref", required=True, metavar="REF",
              help="Package URI, NAME (latest version), NAME/vNNNN, champion or champion:NAME.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A Serve config file (serve_configs/local.yaml, production.yaml): args and deployment options.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="HTTP host (default 127.0.0.1).")
@click.option("--address", default=None, metavar="RAY_ADDRESS",
              help="Ray cluster to deploy on (default: $GENAI_RAY_ADDRESS, else a private local Ray).")
@click.option("--insecure-no-auth", is_flag=True, default=False,
              help="Serve beyond loopback without an API key (refused otherwise; config: serve.insecure_no_auth).")
@click.option("--api-key", "api_key", default=None, hidden=True, expose_value=True,
              help="Refused: keys on a command line leak into shell history and ps; use $GENAI_RAY_API_KEY.")
@click.option("--blocking/--no-blocking", default=True,
              help="Keep running until Ctrl-C (default). --no-blocking returns once the app is up; use it with "
                   "--address, since a private local Ray ends with this process.")
@click.pass_obj
def serve(obj, model_ref: str, config_path: str | None, port: int | None, host: str | None,
          address: str | None, insecure_no_auth: bool, api_key: str | None, blocking: bool) -> None:
    """Serve a generator: POST /v1/generate, GET /v1/model, GET /healthz, gallery at /.

    The API key comes from the environment ($GENAI_RAY_API_KEY, or the config's serve.api_key_env), never from
    the command line. Without one, only loopback hosts are served unless --insecure-no-auth.
    """
    if api_key is not None:
        raise UserError("--api-key: refusing a key on the command line (shell history and 'ps' keep it); "
                        "export it as $GENAI_RAY_API_KEY (or the variable serve.api_key_env names) instead")
    serve_file = load_serve_file(config_path) if config_path else None
    name, url, caveat = start(model_ref, serve_file, host, port, address, obj.store, insecure_no_auth)
    click.echo(f"serving {model_ref} at {url} (gallery: {url}, API docs: {url}docs)")
    if caveat:
        click.echo(f"warning: {caveat}", err=True)
    if not blocking:
        return
    _wait_until_stopped(name, url, address)


def _wait_until_stopped(name: str, url: str, address: str | None) -> None:
    """Serve until SIGINT or SIGTERM. On a cluster the app is deleted then; a private Ray ends with the command."""
    if address or os.environ.get(ADDRESS_ENV):
        def delete() -> None:
            from ray import serve as ray_serve

            ray_serve.delete(name)

        stops.on_stop(delete)
        stops.set_hint(f"deleting the app {name} from the cluster")
    else:
        stops.set_hint(f"{url} is down")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # called without the console's signal handling (main(argv))
        from ray import serve as ray_serve

        ray_serve.delete(name)
        click.echo(f"stopped {name}")
