"""``genai-ray serve``: put a model package behind the HTTP API on Ray Serve and print its URL."""

from __future__ import annotations

import time

import click


@click.command("serve")
@click.option("--model", "model_ref", required=True, metavar="REF",
              help="Package URI, NAME (latest version), NAME/vNNNN, champion or champion:NAME.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A Serve config file (serve_configs/local.yaml, production.yaml): args and deployment options.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="HTTP port (default 8000).")
@click.option("--host", default=None, help="HTTP host (default 127.0.0.1).")
@click.option("--address", default=None, metavar="RAY_ADDRESS",
              help="Ray cluster to deploy on (default: $GENAI_RAY_ADDRESS, else a private local Ray).")
@click.option("--blocking/--no-blocking", default=True,
              help="Keep running until Ctrl-C (default). --no-blocking returns once the app is up; use it with "
                   "--address, since a private local Ray ends with this process.")
@click.pass_obj
def serve(obj, model_ref: str, config_path: str | None, port: int | None, host: str | None,
          address: str | None, blocking: bool) -> None:
    """Serve a generator: POST /v1/generate, GET /v1/model, GET /healthz, gallery at /."""
    from genai_ray.serve.app import load_serve_file, start

    serve_file = load_serve_file(config_path) if config_path else None
    name, url = start(model_ref, serve_file, host, port, address, obj.store)
    click.echo(f"serving {model_ref} at {url} (gallery: {url}, API docs: {url}docs)")
    if not blocking:
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        ray_serve.delete(name)
        click.echo(f"stopped {name}")
