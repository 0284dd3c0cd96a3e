"""docs/configuration.md and the config schema agree: every key a user can set is documented, and every
documented key exists. Read from the schema itself, so a new key fails here until it is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from genai_ray.config import Config, build_config
from genai_ray.errors import UserError

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([a-z_]+\.[a-z0-9_]+)` \|", re.MULTILINE)  # a table row naming a section.key


def schema_keys() -> set[str]:
    """``section.key`` for every field of every section model of ``Config``."""
    keys = set()
    for section, field in Config.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys |= {f"{section}.{key}" for key in model.model_fields}
    return keys


def documented_keys() -> list[str]:
    return ROW.findall(DOC.read_text())


def test_every_schema_key_is_documented_and_every_documented_key_exists() -> None:
    documented = documented_keys()
    assert len(documented) == len(set(documented)), "a key is documented twice"
    schema = schema_keys()
    assert len(schema) > 40, f"the schema walk found only {len(schema)} keys"
    assert not schema - set(documented), f"undocumented in docs/configuration.md: {sorted(schema - set(documented))}"
    assert not set(documented) - schema, f"documented but not in the schema: {sorted(set(documented) - schema)}"


def test_each_key_sits_under_its_own_section_heading() -> None:
    text = DOC.read_text()
    for section in {key.split(".")[0] for key in schema_keys()}:
        body = text.split(f"## `{section}`", 1)
        assert len(body) == 2, f"docs/configuration.md has no '## `{section}`' section"
        table = body[1].split("\n## ", 1)[0]
        assert all(k.startswith(f"{section}.") for k in ROW.findall(table)), f"a key outside its section: {section}"


@pytest.mark.parametrize("removed", [
    {"train": {"fail_at_epoch": 2}}, {"tune": {"pbt_sync": True}}, {"tune": {"trial_runner": "train"}},
    {"tune": {"reuse_actors": False}}, {"model": {"sync_batchnorm": False}}, {"eval": {"max_manifold": 500}},
    {"eval": {"memorisation_quantile": 0.1}}, {"eval": {"memorisation_factor": 0.4}},
    {"eval": {"coverage_min_share": 0.3}}, {"eval": {"fd_pixel_variance": 0.9}},
], ids=lambda d: ".".join([*d, *next(iter(d.values()))]))
def test_test_hooks_and_metric_definitions_are_not_settings(removed: dict) -> None:
    """Old configs that set a retired key get the ordinary unknown-key error, naming it."""
    [(section, values)] = removed.items()
    with pytest.raises(UserError) as err:
        build_config("tiny", removed)
    assert str(err.value) == f"config: {section}.{next(iter(values))}: unknown key"
