"""The API key as a salted, slow hash: what configs hold and replicas check.

A config (and so Serve's dashboard) may show ``serve.api_key_hash``, never the key. The hash is scrypt from the
standard library, salted, with its cost in the string (``scrypt$N$r$p$SALT$HASH``, hex), so a weak key taken
from a dashboard costs an attacker ~50 ms per guess instead of a sha256's nanoseconds. Checks compare in
constant time (``hmac.compare_digest``). Each distinct presented key is hashed once per replica and the verdict
is cached (bounded, keyed by a per-process HMAC of the key, so the cache holds no key), so requests stay fast.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict

from genai_ray.errors import UserError

SCHEME = "scrypt"
COST_N, BLOCK_R, PARALLEL_P = 2**14, 8, 1  # 16 MiB and ~50 ms per hash on one core
SALT_BYTES, HASH_BYTES = 16, 32
HASH_PATTERN = r"^scrypt\$[0-9]{1,8}\$[0-9]{1,2}\$[0-9]{1,2}\$[0-9a-f]{32}\$[0-9a-f]{64}$"
CACHE_SIZE = 1024  # distinct presented keys remembered per replica; the oldest is forgotten first
MAKE_HASH = "genai-ray key-hash"  # the command that prints a hash (the key comes on stdin)


def _derive(key: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(key.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=4 * 128 * r * n)


def hash_key(key: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$HASH`` for ``key``, with a fresh random salt unless one is given."""
    if not key:
        raise UserError("empty API key; pass a non-empty key")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _derive(key, salt, COST_N, BLOCK_R, PARALLEL_P)
    return f"{SCHEME}${COST_N}${BLOCK_R}${PARALLEL_P}${salt.hex()}${digest.hex()}"


def parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(N, r, p, salt, hash) of a stored hash; a malformed or too costly one raises ``UserError``."""
    if not re.fullmatch(HASH_PATTERN, stored):
        raise UserError(f"serve.api_key_hash: not a scrypt hash (scrypt$N$r$p$SALT$HASH); make one with "
                        f"'{MAKE_HASH}'")
    _, n, r, p, salt, digest = stored.split("$")
    n, r, p = int(n), int(r), int(p)
    if n < 2**10 or n > 2**20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise UserError(f"serve.api_key_hash: cost N={n}, r={r}, p={p} is outside N=2^10..2^20 (a power of two), "
                        f"r=1..32, p=1..16; make a new one with '{MAKE_HASH}'")
    return n, r, p, bytes.fromhex(salt), bytes.fromhex(digest)


def verify(stored: str, key: str) -> bool:
    """Whether ``key`` hashes to ``stored``, compared in constant time."""
    n, r, p, salt, digest = parse(stored)
    return bool(key) and hmac.compare_digest(_derive(key, salt, n, r, p), digest)


class KeyVerifier:
    """Checks presented keys against one stored hash; each distinct key pays scrypt once per process."""

    def __init__(self, stored: str, cache_size: int = CACHE_SIZE):
        parse(stored)  # refuse a malformed hash at start-up, not at the first request
        self.stored = stored
        self.cache_size = cache_size
        self._pepper = secrets.token_bytes(32)  # cache keys are HMACs of presented keys: no key sits in memory
        self._seen: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    def _slot(self, key: str) -> bytes:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()

    def cached(self, key: str) -> bool | None:
        """The verdict for ``key`` when it was seen before, else None (without hashing)."""
        slot = self._slot(key)
        with self._lock:
            verdict = self._seen.get(slot)
            if verdict is not None:
                self._seen.move_to_end(slot)
            return verdict

    def matches(self, key: str | None) -> bool:
        """True when ``key`` is the key; scrypt runs only for a key not seen recently."""
        if not key:
            return False
        verdict = self.cached(key)
        if verdict is None:
            verdict = verify(self.stored, key)
            with self._lock:
                self._seen[self._slot(key)] = verdict
                while len(self._seen) > self.cache_size:
                    self._seen.popitem(last=False)
        return verdict


def bearer_token(authorization: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header value, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
