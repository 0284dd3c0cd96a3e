"""Building the Serve application, from ``serve deploy`` or from ``genai-ray serve``.

``serve deploy serve_configs/FILE.yaml`` imports ``genai_ray.serve.app:build`` with the file's ``args``,
which are validated as the ``serve:`` section of the one config model. The deployment options
(autoscaling, max_ongoing_requests, max_queued_requests, resources) stay in Serve's own schema, and
``genai-ray serve --config FILE`` applies the same file the same way.

One version per deployment: a model reference (``champion``, ``NAME``) is resolved once, here, to a concrete
package URI, and that URI is the deployment's ``user_config.model_uri``. Every replica, including those added
by autoscaling or crash replacement, loads exactly it; only a new deploy (or ``genai-ray serve`` again)
resolves the reference anew.

Fail closed: serving beyond loopback with no API key is refused unless ``serve.insecure_no_auth``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from genai_ray import ray_runtime
from genai_ray.config import ServeConfig, build_config, load_yaml
from genai_ray.errors import UserError
from genai_ray.package.format import read_meta, resolve_model_uri
from genai_ray.serve.keyhash import hash_key, verify

# Ray and Ray Serve (and serve/deployment.py, which loads them) are imported inside the functions that need them:
# the CLI loads this module at start-up to read serve config files, and `genai-ray --help` and config errors stay
# fast.

IMPORT_PATH = "genai_ray.serve.app:build"
DEPLOYMENT = "Generator"
DEFAULT_MAX_ONGOING = 64  # the deployment's default max_ongoing_requests


def serve_config(args: dict[str, Any] | None, source: str = "args") -> ServeConfig:
    """Validate builder args as the ``serve:`` section; unknown keys and bad values name the key."""
    if args is not None and not isinstance(args, dict):
        raise UserError(f"{source}: the application args must be a mapping of serve settings")
    if "api_key" in (args or {}):
        raise UserError(f"{source}: api_key: refusing a key in a config file; set serve.api_key_env to the "
                        "environment variable that holds it (default GENAI_RAY_API_KEY) or give api_key_hash "
                        "('genai-ray key-hash' makes it)")
    return build_config(overrides={"serve": dict(args or {})}, source=source).serve


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or 0.0.0.0-like wildcard: assume others can reach it


def require_auth(cfg: ServeConfig, host: str, key_or_hash: str | None, source: str) -> None:
    """Refuse to serve beyond loopback without an API key, unless the config says so explicitly."""
    if not key_or_hash and not cfg.insecure_no_auth and not is_loopback(host):
        raise UserError(f"{source}: refusing to serve on {host} without an API key; set ${cfg.api_key_env} "
                        "(or serve.api_key_hash), bind to 127.0.0.1, or pass --insecure-no-auth "
                        "(serve.insecure_no_auth: true) to serve unauthenticated on purpose")


def proxy_host() -> str:
    """The host Serve's HTTP proxies bind; Serve's own default (loopback) when Serve is not running yet."""
    import ray

    if not ray.is_initialized():
        return "127.0.0.1"  # serve.run starts Ray and Serve with Serve's loopback default
    from ray.serve.context import _get_global_client
    from ray.serve.exceptions import RayServeException

    try:
        client = _get_global_client()
    except RayServeException:
        return "127.0.0.1"
    return client.http_config.host if client is not None else "127.0.0.1"


def resolve_once(ref: str, store: str | None = None) -> str:
    """The concrete, verified package URI a deployment serves: ``champion`` and ``NAME`` resolved now."""
    uri = local_uri(resolve_model_uri(ref, store))
    read_meta(uri)  # a missing or broken package fails here, in one line, before anything deploys
    return uri


def application(cfg: ServeConfig, options: dict[str, Any] | None = None, host: str | None = None,
                resolve: bool = True) -> Any:
    """The bound Serve application, its model resolved once. Only the API key's scrypt hash travels to the replicas.

    The model stays out of the replicas' init args: deploying another model changes only ``user_config``, which
    Serve applies with ``reconfigure`` on the running replicas (a hot swap) instead of replacing them.
    """
    from genai_ray.serve.deployment import Generator

    key = os.environ.get(cfg.api_key_env)
    stored = cfg.api_key_hash or (hash_key(key) if key else None)
    require_auth(cfg, host or proxy_host(), stored, "serve")
    opts = {"user_config": {"model_uri": resolve_once(cfg.model_uri)}} if resolve else {}
    opts.update(options or {})
    return Generator.options(**opts).bind(cfg.model_dump(exclude={"model_uri", "api_key_hash"}), stored)


def build(args: dict[str, Any]) -> Any:
    """Application builder for ``serve deploy`` / ``serve run`` (import path ``genai_ray.serve.app:build``).

    ``args.model_uri`` resolves here, once per build. Without it the config's ``user_config.model_uri`` (a
    concrete package URI, as ``genai-ray serve`` writes it) names the model.
    """
    return application(serve_config(args), resolve="model_uri" in (args or {}))


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
    if "initial_replicas" in auto and not lo <= auto["initial_replicas"] <= hi:
        raise UserError(f"{source}: autoscaling_config.initial_replicas={auto['initial_replicas']} is outside "
                        f"min_replicas..max_replicas ({lo}..{hi})")
    unknown = set(deployment.get("user_config") or {}) - {"model_uri"}
    if unknown:
        raise UserError(f"{source}: user_config has unknown key(s) {', '.join(sorted(unknown))}; "
                        "only model_uri is read")


def load_serve_file(path: str | Path) -> ServeFile:
    """Parse a Serve config with Serve's own schema, then our args and consistency rules."""
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


def deploy_schema(serve_file: ServeFile | None, uri: str, http: dict[str, Any],
                  deployed_hash: str | None = None) -> Any:
    """The Serve config ``serve deploy`` would send, with the model in ``user_config``.

    The model stays out of ``args``, so deploying again with another model changes only the user config:
    Serve then calls ``reconfigure`` on the running replicas (a hot swap) instead of replacing them. For the same
    reason the running app's key hash (``deployed_hash``) is kept when it matches the key: a fresh salt would
    change ``args`` and restart every replica.
    """
    from ray.serve.schema import ServeDeploySchema

    cfg = serve_file.args if serve_file else ServeConfig()
    args = cfg.model_dump(exclude={"model_uri"}, exclude_defaults=True)
    key = os.environ.get(cfg.api_key_env)
    if key and not cfg.api_key_hash:  # the key stays in this process; replicas get its salted hash
        args["api_key_hash"] = deployed_hash if deployed_hash and verify(deployed_hash, key) else hash_key(key)
    options = dict(serve_file.deployment) if serve_file else {}
    options["user_config"] = {**(options.get("user_config") or {}), "model_uri": uri}
    name, prefix = (serve_file.name, serve_file.route_prefix) if serve_file else ("genai-ray", "/")
    return ServeDeploySchema.model_validate({
        "http_options": http,
        "applications": [{"name": name, "route_prefix": prefix, "import_path": IMPORT_PATH, "args": args,
                          "deployments": [{"name": DEPLOYMENT, **options}]}],
    })


def deployed_key_hash(client: Any, app_name: str | None) -> str | None:
    """The ``api_key_hash`` in the args of the running app of that name, if any."""
    apps = client.get_serve_details().get("applications") or {}
    deployed = (apps.get(app_name or "genai-ray") or {}).get("deployed_app_config") or {}
    return (deployed.get("args") or {}).get("api_key_hash")


def _health(url: str, key: str | None, attempts: int = 50) -> dict[str, Any]:
    """GET /healthz with the key (details need it), retrying while the proxies learn the new route."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def get() -> dict[str, Any]:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return json.load(response)

    for _ in range(attempts - 1):
        try:
            return get()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    return get()


def start(model_ref: str, serve_file: ServeFile | None, host: str | None, port: int | None,
          address: str | None, store: str | None, insecure_no_auth: bool = False) -> tuple[str, str, str | None]:
    """Deploy ``model_ref`` the way ``serve run FILE.yaml`` does; returns (app name, URL, a caveat or None).

    On a private local Ray unless ``address``. Running it again with another model hot-swaps the model.
    Like ``serve deploy``, it replaces other config-deployed apps on the cluster.
    """
    from ray import serve
    from ray.serve._private import api as serve_api  # what `serve run FILE.yaml` uses

    cfg = serve_file.args if serve_file else ServeConfig()
    if insecure_no_auth:
        cfg = cfg.model_copy(update={"insecure_no_auth": True})
        if serve_file:
            serve_file.args = cfg
    http = {"host": "127.0.0.1", "port": 8000, **(serve_file.http if serve_file else {})}
    http.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
    key = os.environ.get(cfg.api_key_env)
    require_auth(cfg, str(http["host"]), cfg.api_key_hash or key,
                 serve_file.path if serve_file else "genai-ray serve")
    uri = resolve_once(model_ref, store)
    ray_runtime.ensure_ray(address)
    client = serve_api.serve_start(http_options=http)
    schema = deploy_schema(serve_file, uri, http, deployed_key_hash(client, serve_file.name if serve_file else None))
    app = schema.applications[0]
    try:
        client.deploy_apps(schema, _blocking=True)
    except RuntimeError as err:
        status = serve.status().applications.get(app.name)
        detail = " ".join(d.message.strip().splitlines()[-1] for d in status.deployments.values()
                          if d.message) if status else ""
        raise UserError(f"serving {uri} failed: {detail or str(err).splitlines()[0]}") from None
    shown = "127.0.0.1" if http["host"] in ("0.0.0.0", "::") else http["host"]
    url = f"http://{shown}:{http_port(http['port'])}{app.route_prefix.rstrip('/')}/"
    health = _health(f"{url}healthz", key)
    if health.get("reload_error"):
        raise UserError(f"{health['reload_error']}; still serving {health['model']} at {url}")
    if "model" not in health:  # the config holds only the key's hash: anonymous callers get no load details
        return app.name, url, (f"not checked that the replicas loaded {uri}: ${cfg.api_key_env} is not set here, "
                               f"and /healthz gives details only with the key; check with curl -H "
                               f"'Authorization: Bearer ...' {url}healthz")
    return app.name, url, None
