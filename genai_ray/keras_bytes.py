"""Keras models as ``.keras`` file bytes, so one object can be hashed, stored and verified: the model
package's generator (``genai_ray/package/format.py``) and the evaluator's feature model
(``genai_ray/evaluation/metrics/features.py``) both travel this way."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from genai_ray.errors import IntegrityError

# Keras is imported inside keras_from_bytes(): the CLI loads this module at start-up (through the evaluation
# metrics), and `genai-ray --help` and config errors stay fast.


def keras_to_bytes(model: Any) -> bytes:
    """A Keras model as ``.keras`` file bytes, ready to hash and store as one object."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        model.save(local)
        with open(local, "rb") as f:
            return f.read()


def keras_from_bytes(blob: bytes, uri: str, what: str, fix: str = "") -> Any:
    """Load verified ``.keras`` bytes with ``safe_mode=True`` (no arbitrary code); any failure is an
    ``IntegrityError`` naming ``uri``."""
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        with open(local, "wb") as f:
            f.write(blob)
        try:
            return keras.models.load_model(local, safe_mode=True, compile=False)
        except Exception as err:  # noqa: BLE001 - any load failure means a bad file
            raise IntegrityError(f"{uri}: cannot load {what} ({str(err).splitlines()[0][:160]}){fix}") from None
