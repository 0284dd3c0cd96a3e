"""Finding the Ray token for a cluster with token authentication on (the Ray 2.60 default).

Ray's own HTTP clients (``JobSubmissionClient``) send the token only when ``RAY_AUTH_MODE=token`` is set in
*their* process, so a laptop without it gets "401 Missing authentication token" from a cluster that has it.
We therefore look the token up ourselves, in Ray's documented order, and always send it. The token is a
secret: it goes into one request header and is never printed, logged or put in a job's runtime env.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from genai_ray.errors import UserError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def default_token_path() -> Path:
    """Where ``ray start`` and ``ray get-auth-token --generate`` keep the token of a local cluster."""
    return Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class Token:
    value: str = ""  # the secret itself; never print it
    source: str = ""  # where it came from, safe to show ("$RAY_AUTH_TOKEN", a file path)

    def __repr__(self) -> str:  # keeps the secret out of tracebacks and debug output
        return f"Token(source={self.source!r})"


def find_token() -> Token | None:
    """The token from $RAY_AUTH_TOKEN, the file at $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (Ray's order)."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return Token(os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    if os.environ.get(TOKEN_PATH_ENV):
        path = Path(os.environ[TOKEN_PATH_ENV]).expanduser()
        value = path.read_text().strip() if path.is_file() else ""
        if not value:
            raise UserError(f"{TOKEN_PATH_ENV}={path} is missing or empty; point it at the file holding the "
                            "cluster's token (on the head node: 'ray get-auth-token')")
        return Token(value, str(path))
    path = default_token_path()
    if path.is_file() and path.read_text().strip():
        return Token(path.read_text().strip(), str(path))
    return None


def auth_headers(token: Token | None) -> dict[str, str]:
    """The HTTP header Ray's dashboard and Jobs API accept (also harmless when auth is off)."""
    return {"Authorization": f"Bearer {token.value}"} if token else {}


def how_to_provide() -> str:
    return (f"set {TOKEN_ENV}, or {TOKEN_PATH_ENV} to a file holding it, or put it in {default_token_path()} "
            "(print it on the head node with 'ray get-auth-token')")
