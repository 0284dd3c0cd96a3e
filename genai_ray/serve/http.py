"""The thin HTTP layer: request schema, response rendering, bearer auth, body limit, error mapping.

Client mistakes become 4xx with a one-line ``detail``: bad JSON (even non-UTF-8 bytes) or fields 422, a body over
``serve.max_body_bytes`` 413, a missing or wrong key 401. Nothing here knows about Ray.
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


def key_digest(key: str | None) -> str | None:
    """sha256 of an API key: what replicas keep and compare, so the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def authorize(expected_digest: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Constant-time bearer check; a no-op when no key is configured."""
    if expected_digest is None:
        return
    presented = key_digest(credentials.credentials) if credentials else None
    if presented is None or not hmac.compare_digest(presented, expected_digest):
        raise HTTPException(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})


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
    """Attach the body limit and the client-error mapping to ``app``."""
    app.add_middleware(BodyLimit, limits=limits)

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
