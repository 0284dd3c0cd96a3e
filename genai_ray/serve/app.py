"""Building the Serve application, from ``serve deploy`` or from ``genai-ray serve``.

``serve deploy serve_configs/FILE.yaml`` imports ``genai_ray.serve.app:build`` with the file's ``args``,
which are validated as the ``serve:`` section of the one config model. The deployment options
(autoscaling, max_ongoing_requests, max_queued_requests, resources, ``user_config.model_uri``) stay in
Serve's own schema, and ``genai-ray serve --config FILE`` applies the same file the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genai_ray.config import ServeConfig, build_config, load_yaml
from genai_ray.errors import UserError

IMPORT_PATH = "genai_ray.serve.app:build"
DEPLOYMENT = "Generator"
DEFAULT_MAX_ONGOING = 64  # the deployment's default max_ongoing_requests


def serve_config(args: dict[str, Any] | None, source: str = "args") -> ServeConfig:
    """Validate builder args as the ``serve:`` section; unknown keys and bad values name the key."""
    if args is not None and not isinstance(args, dict):
        raise UserError(f"{source}: the application args must be a mapping of serve settings")
    return build_config(overrides={"serve": dict(args or {})}, source=source).serve


def application(cfg: ServeConfig, options: dict[str, Any] | None = None) -> Any:
    """The bound Serve application. Only the API key's sha256 travels to the replicas."""
    from genai_ray.serve.deployment import Generator
    from genai_ray.serve.http import key_digest

    opts = {"user_config": {"model_uri": cfg.model_uri}, **(options or {})}
    digest = cfg.api_key_sha256 or key_digest(os.environ.get(cfg.api_key_env))
    return Generator.options(**opts).bind(cfg.model_dump(), digest)


def build(args: dict[str, Any]) -> Any:
    """Application builder for ``serve deploy`` / ``serve run`` (import path ``genai_ray.serve.app:build``)."""
    return application(serve_config(args))


@dataclass
class ServeFile:
    """One genai-ray application out of a Serve config file."""

    path: str
    name: str
    route_prefix: str
    args: ServeConfig
    deployment: dict[str, Any] = field(default_factory=dict)  # Serve deployment options, minus its name
    http: dict[str, Any] = field(default_factory=dict)  # the file's http_options


def check_consistency(cfg: ServeConfig, deployment: dict[str, Any], source: str) -> None:
    """Batching, concurrency and autoscaling settings that only work together."""
    max_ongoing = deployment.get("max_ongoing_requests", DEFAULT_MAX_ONGOING)
    if max_ongoing < cfg.max_batch_size:
        raise UserError(f"{source}: max_ongoing_requests={max_ongoing} is below args.max_batch_size="
                        f"{cfg.max_batch_size}; it caps batches, so raise it to at least the batch size")
    auto = deployment.get("autoscaling_config") or {}
    lo, hi = auto.get("min_replicas", 1), auto.get("max_replicas", 1)
    if lo > hi:
        raise UserError(f"{source}: autoscaling_config.min_replicas={lo} is above max_replicas={hi}")
    target = auto.get("target_ongoing_requests")
    if target is not None and target > max_ongoing:
        raise UserError(f"{source}: autoscaling_config.target_ongoing_requests={target} is above "
                        f"max_ongoing_requests={max_ongoing}; replicas could never reach it")
    unknown = set(deployment.get("user_config") or {}) - {"model_uri"}
    if unknown:
        raise UserError(f"{source}: user_config has unknown key(s) {', '.join(sorted(unknown))}; "
                        "only model_uri is read")


def load_serve_file(path: str | Path) -> ServeFile:
    """Parse a Serve config with Serve's own schema, then our args and consistency rules."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    data = load_yaml(path)
    try:
        schema = ServeDeploySchema.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path}: {where}: {first['msg']}") from None
    apps = [a for a in schema.applications if a.import_path == IMPORT_PATH]
    if len(apps) != 1:
        raise UserError(f"{path}: expected exactly one application with import_path {IMPORT_PATH}, found {len(apps)}")
    spec = apps[0]
    source = f"{path}: applications[{spec.name}]"
    cfg = serve_config(spec.args, source=f"{source}.args")
    deployments = [d for d in spec.deployments if d.name == DEPLOYMENT]
    options = deployments[0].model_dump(exclude_unset=True) if deployments else {}
    options.pop("name", None)
    check_consistency(cfg, options, source)
    http = schema.http_options.model_dump(exclude_unset=True)
    return ServeFile(str(path), spec.name, spec.route_prefix or "/", cfg, options, http)


def local_uri(uri: str) -> str:
    """Absolute paths for local packages: replicas run in other working directories."""
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def http_port(requested: int) -> int:
    """The port Serve really listens on: a running Serve keeps its own HTTP options."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    return client.http_config.port if client is not None else requested


def deploy_schema(serve_file: ServeFile | None, uri: str, http: dict[str, Any]) -> Any:
    """The Serve config ``serve deploy`` would send, with the model in ``user_config``.

    The model stays out of ``args``, so deploying again with another model changes only the user config:
    Serve then calls ``reconfigure`` on the running replicas (a hot swap) instead of replacing them.
    """
    from ray.serve.schema import ServeDeploySchema

    from genai_ray.serve.http import key_digest

    cfg = serve_file.args if serve_file else ServeConfig()
    args = cfg.model_dump(exclude={"model_uri"}, exclude_defaults=True)
    digest = key_digest(os.environ.get(cfg.api_key_env))
    if digest and not cfg.api_key_sha256:
        args["api_key_sha256"] = digest  # the key stays in this process; replicas get its hash
    options = dict(serve_file.deployment) if serve_file else {}
    options["user_config"] = {**(options.get("user_config") or {}), "model_uri": uri}
    name, prefix = (serve_file.name, serve_file.route_prefix) if serve_file else ("genai-ray", "/")
    return ServeDeploySchema.model_validate({
        "http_options": http,
        "applications": [{"name": name, "route_prefix": prefix, "import_path": IMPORT_PATH, "args": args,
                          "deployments": [{"name": DEPLOYMENT, **options}]}],
    })


def _health(url: str, attempts: int = 50) -> dict[str, Any]:
    """GET /healthz, retrying while the proxies learn the new route."""
    import json
    import time
    import urllib.error
    import urllib.request

    def get() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)

    for _ in range(attempts - 1):
        try:
            return get()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    return get()


def start(model_ref: str, serve_file: ServeFile | None, host: str | None, port: int | None,
          address: str | None, store: str | None) -> tuple[str, str]:
    """Deploy ``model_ref`` the way ``serve run FILE.yaml`` does; returns (app name, URL).

    On a private local Ray unless ``address``. Running it again with another model hot-swaps the model.
    Like ``serve deploy``, it replaces other config-deployed apps on the cluster.
    """
    from ray import serve
    from ray.serve._private import api as serve_api  # what `serve run FILE.yaml` uses

    from genai_ray.package import read_meta, resolve_model_uri
    from genai_ray.ray_runtime import ensure_ray

    uri = local_uri(resolve_model_uri(model_ref, store))
    read_meta(uri)  # a missing or broken package fails here, in one line, before anything deploys
    http = {"host": "127.0.0.1", "port": 8000, **(serve_file.http if serve_file else {})}
    http.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    schema = deploy_schema(serve_file, uri, http)
    app = schema.applications[0]
    ensure_ray(address)
    client = serve_api.serve_start(http_options=http)
    try:
        client.deploy_apps(schema, _blocking=True)
    except RuntimeError as err:
        status = serve.status().applications.get(app.name)
        detail = " ".join(d.message.strip().splitlines()[-1] for d in status.deployments.values()
                          if d.message) if status else ""
        raise UserError(f"serving {uri} failed: {detail or str(err).splitlines()[0]}") from None
    shown = "127.0.0.1" if http["host"] in ("0.0.0.0", "::") else http["host"]
    url = f"http://{shown}:{http_port(http['port'])}{app.route_prefix.rstrip('/')}/"
    health = _health(f"{url}healthz")
    if health.get("reload_error"):
        raise UserError(f"{health['reload_error']}; still serving {health['model']} at {url}")
    return app.name, url
