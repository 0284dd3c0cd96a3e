"""The Ray Serve deployment: FastAPI ingress, request batching, hot reload and health.

Ray glue only. The model lives in a ``ModelSlot`` (load in ``reconfigure``, so changing
``user_config.model_uri`` hot-swaps it), concurrent requests meet in one ``@serve.batch`` call of the
pure ``run_batch``, and ``check_health`` raises while no model could be loaded, naming the URI.
"""

# No "from __future__ import annotations": FastAPI must see real types on the ingress methods.
import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve

from genai_ray import __version__
from genai_ray.config import ServeConfig
from genai_ray.errors import UserError
from genai_ray.package.format import is_reference, per_image_seeds
from genai_ray.serve import gallery
from genai_ray.serve.http import GenerateRequest, authorize, install, key_matches_async, render
from genai_ray.serve.keyhash import KeyVerifier, hash_key
from genai_ray.serve.slot import Job, ModelSlot, Result, run_batch

USER_CONFIG_KEYS = {"model_uri"}  # what reconfigure reads from user_config


@dataclass
class Limits:
    """Per-process settings the ASGI middleware reads (one replica per process)."""

    max_body_bytes: int = ServeConfig().max_body_bytes
    verifier: KeyVerifier | None = None  # checks the API key against its scrypt hash; None: no key, /v1/* is open


@dataclass
class Stats:
    """Batching counters, exposed in /v1/model so load tests can see batches form."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    rejected: int = 0  # requests refused inside a batch (a bad label), each alone
    mixed_batches: int = 0  # batches in which refused requests sat next to served ones

    def record(self, size: int, rejected: int = 0) -> None:
        self.batches += 1
        self.requests += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1
        self.rejected += rejected
        self.mixed_batches += bool(size and rejected)


class ReplicaCount:
    """The deployment's replicas by state, from Serve's controller, cached for a second: it is a remote call."""

    TTL_S = 1.0

    def __init__(self) -> None:
        self.value: dict[str, int] = {}
        self.at = -self.TTL_S

    async def get(self, app_name: str, deployment: str) -> dict[str, int]:
        if time.monotonic() - self.at > self.TTL_S:
            status = await asyncio.to_thread(serve.status)
            app_status = status.applications.get(app_name)
            dep = app_status.deployments.get(deployment) if app_status else None
            self.value = {str(k): v for k, v in (dep.replica_states if dep else {}).items()}
            self.at = time.monotonic()
        return self.value


limits = Limits()
app = FastAPI(title="genai-ray generator", version=__version__,
              description="Generate images from a genai-ray model package. Send 'Authorization: Bearer <key>' "
                          "to /v1/* when the server has an API key.")
install(app, limits)
bearer = HTTPBearer(auto_error=False, description="the API key, when the server has one")


@serve.deployment(
    name="Generator",
    max_ongoing_requests=64,  # >= max_batch_size, or it caps the batches
    max_queued_requests=256,  # beyond this the proxy answers 503 at once
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    health_check_period_s=5,
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress(app)
class Generator:
    """One replica: a model slot, a batcher, and the HTTP routes."""

    def __init__(self, config: dict[str, Any], api_key_hash: str | None = None):
        self.cfg = ServeConfig.model_validate(config)
        # The builder passes the key's scrypt hash; a replica's own env (a Kubernetes secret) also works, hashed here
        # with a fresh salt so that only the hash stays in memory.
        key = os.environ.get(self.cfg.api_key_env)
        stored = api_key_hash or self.cfg.api_key_hash or (hash_key(key) if key else None)
        self.verifier = KeyVerifier(stored) if stored else None
        limits.verifier = self.verifier
        self.slot = ModelSlot()
        self.stats = Stats()
        limits.max_body_bytes = self.cfg.max_body_bytes
        self.replicas = ReplicaCount()
        self.call_s = 0.0  # a moving average of one generator call, for batch_wait_timeout_s while busy
        self._batched.set_max_batch_size(self.cfg.max_batch_size)
        self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load ``user_config.model_uri`` (or the configured one) off the event loop, then swap it in."""
        unknown = set(user_config or {}) - USER_CONFIG_KEYS
        if unknown:
            raise UserError(f"user_config: unknown key(s) {', '.join(sorted(unknown))}; only model_uri is read")
        ref = (user_config or {}).get("model_uri")
        if not ref or is_reference(ref):
            # Each replica would resolve it on its own, at its own time: after a promotion, replicas added by
            # autoscaling or crash replacement would serve another version than the rest.
            self.slot.error = (f"user_config.model_uri={ref!r} is not a package URI; put a model reference "
                               "(champion, NAME) in args.model_uri, which resolves once per deploy, or name "
                               "the package (models/NAME/vNNNN) in user_config.model_uri")
            return
        await asyncio.to_thread(self.slot.load, ref)

    def check_health(self) -> None:
        self.slot.check_health()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batched(self, jobs: list[Job]) -> list[Result | UserError]:
        package = self.slot.package  # one snapshot for the whole batch
        assert package is not None, "routes check for a model before batching"
        # Ray's batcher forms the next batch as soon as a request arrives, without waiting for this call to
        # finish, so under load batches stayed at 1-2 requests. While a call runs, the next batch waits about one
        # call for company; when idle, only the configured wait.
        self._batched.set_batch_wait_timeout_s(max(self.cfg.batch_wait_timeout_s, self.call_s))
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(run_batch, package, jobs)
        finally:
            self.call_s = 0.8 * self.call_s + 0.2 * (time.perf_counter() - started)
            self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        refused = sum(isinstance(r, UserError) for r in results)
        self.stats.record(len(results) - refused, refused)
        return results

    def _authorize(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        authorize(self.verifier, credentials)

    def _require_model(self) -> None:
        if self.slot.package is None:
            raise HTTPException(503, self.slot.error or "the model is still loading; retry shortly")

    @app.post("/v1/generate", response_class=Response,
              responses={200: {"content": {"image/png": {}, "application/octet-stream": {}, "application/json": {}},
                               "description": "images; X-Model, X-Seed, X-Seeds headers name their origin "
                                              "(X-Model-Uri too with serve.expose_model_uri)"},
                         401: {"description": "missing or wrong API key"},
                         413: {"description": "request body too large"},
                         422: {"description": "invalid request"},
                         503: {"description": "no model loaded, or overloaded"}})
    async def generate(self, body: GenerateRequest,
                       credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Response:
        """Generate ``n`` images; image i uses seed + i, so equal requests give equal pixels."""
        self._authorize(credentials)
        self._require_model()
        if body.n > self.cfg.max_n:
            raise HTTPException(422, f"n={body.n} is over this server's limit of {self.cfg.max_n} (serve.max_n)")
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        result = await self._batched(Job(per_image_seeds(seed, body.n), body.label, body.truncation_psi))
        if isinstance(result, UserError):
            raise HTTPException(422, str(result))
        return await asyncio.to_thread(render, result, body.format, seed, self.cfg.expose_model_uri)

    @app.get("/v1/model")
    async def model(self, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict[str, Any]:
        """The served package's metadata and metrics, plus this replica's batching counters."""
        self._authorize(credentials)
        self._require_model()
        package = self.slot.package
        context = serve.get_replica_context()
        serving = {"replica": context.replica_id.unique_id, "pid": os.getpid(),
                   "replicas": await self.replicas.get(context.app_name, context.deployment),
                   "max_n": self.cfg.max_n,
                   "max_batch_size": self.cfg.max_batch_size, "batches": self.stats.batches,
                   "requests": self.stats.requests, "largest_batch": self.stats.largest_batch,
                   "batch_sizes": {str(k): v for k, v in sorted(self.stats.sizes.items())},
                   "rejected": self.stats.rejected, "mixed_batches": self.stats.mixed_batches}
        return {**package.meta.model_dump(mode="json"), "uri": package.uri, "reload_error": self.slot.error,
                "serving": serving}

    @app.get("/healthz")
    async def healthz(self, request: Request) -> JSONResponse:
        """200 when serving, 503 otherwise. Only callers with the key (or any caller, when the server has no key)
        learn the model version and the latest load error: both name URIs."""
        details = await key_matches_async(self.verifier, request.headers.get("authorization"))
        try:
            self.slot.check_health()
        except RuntimeError as err:
            return JSONResponse({"status": "unhealthy", **({"detail": str(err)} if details else {})}, 503)
        if not details:
            return JSONResponse({"status": "ok"})
        meta = self.slot.package.meta
        return JSONResponse({"status": "ok", "model": f"{meta.name}/{meta.version}", "reload_error": self.slot.error})

    @app.get("/", response_class=HTMLResponse)
    async def index(self, request: Request) -> HTMLResponse:
        """The gallery page."""
        return HTMLResponse(gallery.page(request.scope.get("root_path", "")))
