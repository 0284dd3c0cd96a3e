"""The thin HTTP layer: request schema, response rendering, bearer auth, body limit, error mapping.

Client mistakes become 4xx with a one-line ``detail``: a missing or wrong key 401 (checked first, so a client
without the key learns nothing about the API), a body over ``serve.max_body_bytes`` 413, bad JSON (even non-UTF-8
bytes) or fields 422. Nothing here knows about Ray.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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


def key_digest(key: str | None) -> str | None:
    """sha256 of an API key: what replicas keep and compare, so the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


UNAUTHORIZED = "missing or wrong API key; send 'Authorization: Bearer <key>'"


def key_matches(expected_digest: str | None, authorization: str | None) -> bool:
    """Constant-time check of an ``Authorization`` header value; True when no key is configured."""
    if expected_digest is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    presented = key_digest(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    return presented is not None and hmac.compare_digest(presented, expected_digest)


def authorize(expected_digest: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Constant-time bearer check; a no-op when no key is configured."""
    if expected_digest is None:
        return
    header = f"Bearer {credentials.credentials}" if credentials else None
    if not key_matches(expected_digest, header):
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def provenance(result: Result, seed: int) -> dict[str, str]:
    """What every response carries, as headers and PNG text chunks."""
    out = {
        "model": f"{result.meta.name}/{result.meta.version}",
        "model-uri": result.uri,
        "seed": str(seed),
        "seeds": ",".join(map(str, result.seeds)),
        "batch-size": str(result.batch_size),
    }
    if result.labels is not None:
        out["labels"] = ",".join(map(str, result.labels))
    return out


def render(result: Result, fmt: str, seed: int) -> Response:
    """The images in the requested format, named by model version and seeds."""
    info = provenance(result, seed)
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
        text = {"model": model, "model-uri": result.uri, "seed": str(s)}
        if label is not None:
            text["label"] = str(label)
        images.append({"seed": s, "label": label, "png": base64.b64encode(png_bytes(image, text)).decode()})
    body: dict[str, Any] = {
        "model": {"name": result.meta.name, "version": result.meta.version, "uri": result.uri},
        "seed": seed, "seeds": result.seeds, "labels": result.labels, "batch_size": result.batch_size,
        "images": images,
    }
    return JSONResponse(body, headers=headers)


class AuthGate:
    """ASGI middleware: 401 for ``/v1/*`` without the right key, before the body is read or validated.

    FastAPI parses and validates a body before a route's own checks run, so a check inside the route would hand
    anonymous clients 422 details about the API. ``limits.key_sha256`` is None when the server has no key.
    """

    PROTECTED = "/v1/"

    def __init__(self, app: Any, limits: Any):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.limits.key_sha256 is not None:
            path = scope.get("path", "")
            root = scope.get("root_path", "")
            inner = path[len(root):] if root and path.startswith(root) else path
            if inner.startswith(self.PROTECTED):
                header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
                if not key_matches(self.limits.key_sha256, header):
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
