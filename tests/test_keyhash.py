"""The API key's salted scrypt hash: making it, checking it once per distinct key, and refusing the old sha256."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from genai_ray.cli import main
from genai_ray.config import build_config
from genai_ray.errors import UserError
from genai_ray.serve.keyhash import KeyVerifier, hash_key, verify

CONFIGS = Path(__file__).resolve().parents[1] / "serve_configs"
GENAI_RAY = Path(sys.executable).with_name("genai-ray")


def test_hash_is_salted_slow_scrypt_and_verifies_only_its_key() -> None:
    first, second = hash_key("correct horse"), hash_key("correct horse")
    assert first != second  # a fresh salt each time: equal keys do not give equal hashes
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1) and len(salt) == 32 and len(digest) == 64
    assert digest != hashlib.sha256(b"correct horse").hexdigest()
    assert verify(first, "correct horse") and verify(second, "correct horse")
    assert not verify(first, "correct horsE") and not verify(first, "")
    started = time.perf_counter()
    verify(first, "guess")
    assert time.perf_counter() - started > 0.005  # a guess costs milliseconds, not a sha256's nanoseconds


def test_each_distinct_key_is_hashed_once_and_the_cache_is_bounded() -> None:
    verifier = KeyVerifier(hash_key("k-good"), cache_size=3)
    for key, expected in (("k-good", True), ("k-bad", False)):
        assert verifier.cached(key) is None
        started = time.perf_counter()
        assert verifier.matches(key) is expected
        first = time.perf_counter() - started
        started = time.perf_counter()
        assert [verifier.matches(key) for _ in range(50)] == [expected] * 50
        assert time.perf_counter() - started < first / 2  # 50 cached checks cost less than half of one scrypt
        assert verifier.cached(key) is expected
    assert verifier.matches(None) is False and verifier.matches("") is False
    for key in ("a", "b", "c"):
        verifier.matches(key)
    assert len(verifier._seen) == 3 and verifier.cached("k-good") is None  # the oldest verdicts went first
    assert verifier.cached("c") is False
    assert not any(b"k-good" in slot or slot == b"c" for slot in verifier._seen)  # HMACs, never the keys


def test_a_config_with_the_old_sha256_is_refused_in_one_line_saying_how_to_regenerate() -> None:
    with pytest.raises(UserError) as err:
        build_config("tiny", {"serve": {"api_key_sha256": hashlib.sha256(b"k").hexdigest()}})
    message = str(err.value)
    assert message.startswith("config: serve: api_key_sha256 is an unsalted hash") and "\n" not in message
    assert "api_key_hash" in message and "genai-ray key-hash" in message
    with pytest.raises(UserError, match="serve.api_key_hash: not a scrypt hash"):
        build_config("tiny", {"serve": {"api_key_hash": hashlib.sha256(b"k").hexdigest()}})
    cheap = hash_key("k").replace("$16384$", "$2$", 1)
    with pytest.raises(UserError, match="cost N=2, r=8, p=1 is outside"):
        build_config("tiny", {"serve": {"api_key_hash": cheap}})
    assert build_config("tiny", {"serve": {"api_key_hash": hash_key("k")}}).serve.api_key_hash.startswith("scrypt$")


def test_serve_with_an_old_style_config_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    data = yaml.safe_load((CONFIGS / "local.yaml").read_text())
    data["applications"][0]["args"]["api_key_sha256"] = hashlib.sha256(b"k").hexdigest()
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(data))
    assert main(["serve", "--model", "anything", "--config", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "api_key_sha256 is an unsalted hash" in err and "genai-ray key-hash" in err


def test_key_hash_command_reads_the_key_on_stdin() -> None:
    done = subprocess.run([str(GENAI_RAY), "key-hash"], input="s3cret-key\n", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    stored = done.stdout.strip()
    assert verify(stored, "s3cret-key") and not verify(stored, "s3cret-key\n") and "s3cret" not in stored
    empty = subprocess.run([str(GENAI_RAY), "key-hash"], input="", capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and empty.stderr.startswith("error: no API key on stdin") and not empty.stdout
