"""Model, run, campaign and dataset names: the one check, applied wherever a user names one.

A name becomes a path segment in the store (``models/<name>/``, ``runs/<name>/``, ``datasets/<name>/``), so
a separator or ``..`` would let it write outside its folder, or over another model's files.
"""

from __future__ import annotations

import re

from genai_ray.errors import UserError

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")  # ASCII only: str.isalnum() would also take other scripts' letters


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` when it is letters, digits, ``-``, ``_`` and ``.`` (no ``..``); else raise ``UserError``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:60] + "..."
        raise UserError(f"{what} {shown!r}: use 1-128 letters, digits, '-', '_' and '.', with no '..' and no "
                        "path separators")
    return name


def safe_name(text: str, fallback: str) -> str:
    """A valid name derived from ``text`` (a folder or file name): other characters become ``-``."""
    name = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_-]", "-", text)).strip("-")[:128]
    return name or fallback
