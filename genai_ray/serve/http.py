"""The thin HTTP layer: request schema, response rendering, bearer auth, body limit, error mapping.

Client mistakes become 4xx with a one-line ``detail``: a missing or wrong key 401 (checked first, so a client
without the key learns nothing about the API), a body over ``serve.max_body_bytes`` 413, bad JSON (even non-UTF-8
bytes) or fields 422. Nothing here knows about Ray.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai_ray.errors import UserError
from genai_ray.images import grid_png, png_bytes
from genai_ray.serve.keyhash import KeyVerifier, bearer_token
from genai_ray.serve.slot import Result

MAX_SEED = 2**53 - 1  # seeds stay exact in JavaScript numbers


class GenerateRequest(BaseModel):
    """Body of ``POST /v1/generate``."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(1, ge=1, le=1024, description="images to generate (at most serve.max_n)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="image i uses seed + i; random when omitted")
    label: int | str | None = Field(None, description="class index or name (conditional models only)")
    format: Literal["png", "npy", "json"] = Field("png", description="png grid, float32 .npy, or JSON of PNGs")
    truncation_psi: float = Field(1.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                  description="pull latents toward the mean: 1 = none, lower = less diverse")


UNAUTHORIZED = "missing or wrong API key; send 'Authorization: Bearer <key>'"


def key_matches(verifier: KeyVerifier | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header value holds the key (scrypt once per distinct key, then cached); True when
    no key is configured."""
    return verifier is None or verifier.matches(bearer_token(authorization))


async def key_matches_async(verifier: KeyVerifier | None, authorization: str | None) -> bool:
    """``key_matches`` that runs a key's first, slow hash off the event loop, so other requests go on meanwhile."""
    if verifier is None:
        return True
    token = bearer_token(authorization)
    if token is None:
        return False
    verdict = verifier.cached(token)
    return verdict if verdict is not None else await asyncio.to_thread(verifier.matches, token)


def authorize(verifier: KeyVerifier | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Bearer check for a route (the gate already ran, so the verdict is cached); a no-op without a key."""
    if verifier is None:
        return
    header = f"Bearer {credentials.credentials}" if credentials else None
    if not key_matches(verifier, header):
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def provenance(result: Result, seed: int, expose_uri: bool = False) -> dict[str, str]:
    """What every response carries, as headers and PNG text chunks: the model version, and its store URI only with
    ``serve.expose_model_uri`` (a URI names buckets and paths)."""
    out = {"model": f"{result.meta.name}/{result.meta.version}"}
    if expose_uri:
        out["model-uri"] = result.uri
    out.update({"seed": str(seed), "seeds": ",".join(map(str, result.seeds)), "batch-size": str(result.batch_size)})
    if result.labels is not None:
        out["labels"] = ",".join(map(str, result.labels))
    return out


def render(result: Result, fmt: str, seed: int, expose_uri: bool = False) -> Response:
    """The images in the requested format, named by model version and seeds."""
    info = provenance(result, seed, expose_uri)
    headers = {f"X-{k.title()}": v for k, v in info.items()}
    if fmt == "png":
        return Response(grid_png(result.images, text=info), media_type="image/png", headers=headers)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, result.images)
        return Response(buf.getvalue(), media_type="application/octet-stream", headers=headers)
    model = info["model"]
    images = []
    for i, (image, s) in enumerate(zip(result.images, result.seeds, strict=True)):
        label = None if result.labels is None else result.labels[i]
        text = {"model": model, **({"model-uri": result.uri} if expose_uri else {}), "seed": str(s)}
        if label is not None:
            text["label"] = str(label)
        images.append({"seed": s, "label": label, "png": base64.b64encode(png_bytes(image, text)).decode()})
    named = {"name": result.meta.name, "version": result.meta.version, **({"uri": result.uri} if expose_uri else {})}
    body: dict[str, Any] = {
        "model": named,
        "seed": seed, "seeds": result.seeds, "labels": result.labels, "batch_size": result.batch_size,
        "images": images,
    }
    return JSONResponse(body, headers=headers)


class AuthGate:
    """ASGI middleware: 401 for ``/v1/*`` and the API docs without the right key, before the body is read.

    FastAPI parses and validates a body before a route's own checks run, so a check inside the route would hand
    anonymous clients 422 details about the API; the OpenAPI schema and docs would describe it whole.
    ``limits.verifier`` is None when the server has no key.
    """

    PROTECTED = ("/v1/", "/docs", "/redoc", "/openapi.json")  # /docs also covers /docs/oauth2-redirect

    def __init__(self, app: Any, limits: Any):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.limits.verifier is not None:
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            inner = path[len(root):] if root and path.startswith(root) else path
            if inner.startswith(self.PROTECTED):
                header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
                if not await key_matches_async(self.limits.verifier, header):
                    response = JSONResponse({"detail": UNAUTHORIZED}, 401, headers={"WWW-Authenticate": "Bearer"})
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``limits.max_body_bytes``, declared or streamed.

    Bodies are small JSON, so it buffers up to the limit before the app runs; FastAPI would turn an
    error raised mid-read into a 400.
    """

    def __init__(self, app: Any, limits: Any):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
            return
        first = await receive()
        chunks: list[bytes] = []
        message, size = first, 0
        while True:
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._reject(scope, send, limit)
                return
            if not message.get("more_body", False):
                break
            message = await receive()
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {**first, "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope: dict, send: Any, limit: int) -> None:
        response = JSONResponse({"detail": f"request body is over {limit} bytes (serve.max_body_bytes)"}, 413)
        await response(scope, None, send)


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def install(app: FastAPI, limits: Any) -> None:
    """Attach the key check, the body limit and the client-error mapping to ``app``."""
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(AuthGate, limits=limits)  # added last, so it runs first

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(err)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        if err.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not UTF-8 JSON
            return JSONResponse({"detail": "body: not valid JSON (UTF-8 expected)"}, 422)
        return JSONResponse({"detail": err.detail}, err.status_code, headers=err.headers)

    @app.exception_handler(UserError)
    async def _user_error(_: Request, err: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, 422)
