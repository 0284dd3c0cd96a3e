"""``genai-ray key-hash``: the salted scrypt hash of an API key, for ``serve.api_key_hash``."""

from __future__ import annotations

import sys

import click

from genai_ray.errors import UserError
from genai_ray.serve.keyhash import hash_key


@click.command("key-hash")
def key_hash() -> None:
    """Print the scrypt hash of the API key read on stdin (prompted, hidden, on a terminal).

    Put the output in a Serve config as serve.api_key_hash. The key never goes on the command line: shell history
    and 'ps' would keep it. Example: printf %s "$GENAI_RAY_API_KEY" | genai-ray key-hash
    """
    if sys.stdin.isatty():
        key = click.prompt("API key", hide_input=True, confirmation_prompt=True, err=True)
    else:
        key = sys.stdin.read().rstrip("\r\n")  # `echo KEY |` adds a newline that is not part of the key
    if not key.strip():
        raise UserError("no API key on stdin; pipe one in, for example: printf %s \"$GENAI_RAY_API_KEY\" | "
                        "genai-ray key-hash")
    click.echo(hash_key(key))
