"""The one config model: presets validate, unknown keys and bad values are one line that names the key, and
``--set`` parses dotted keys and YAML scalars, through the library and through the real CLI (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genai_ray.cli import main
from genai_ray.config import PRESETS, Config, build_config, load_config, parse_set_option
from genai_ray.errors import UserError


def user_error(fn, *args) -> str:
    """The message of the UserError ``fn(*args)`` raises; it must be one line."""
    with pytest.raises(UserError) as err:
        fn(*args)
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_validates_and_applies_its_values(preset: str) -> None:
    cfg = build_config(preset)
    assert cfg.preset == preset
    for section, values in PRESETS[preset].items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, f"{preset}: {section}.{key}"
    # What every run and package saves is a complete config that validates again to the same thing.
    assert Config.model_validate_json(cfg.model_dump_json()) == cfg


def test_unknown_preset_names_the_choices() -> None:
    message = user_error(build_config, "huge")
    assert "unknown preset 'huge'" in message and all(p in message for p in PRESETS)


@pytest.mark.parametrize(("overrides", "where"), [
    ({"bogus": 1}, "bogus"),  # top level
    ({"train": {"bogus": 1}}, "train.bogus"),  # in a section
    ({"eval": {"knn_k": 3, "knn": 3}}, "eval.knn"),  # a near-miss next to a valid key
    ({"serve": {"max_n": 8}, "tune": {"sampels": 4}}, "tune.sampels"),  # in a later section
], ids=["top", "section", "near-miss", "later-section"])
def test_unknown_keys_are_refused_and_named(overrides: dict, where: str) -> None:
    assert user_error(build_config, "tiny", overrides) == f"config: {where}: unknown key"


def test_a_key_under_a_value_is_refused_and_names_the_value(tmp_path: Path) -> None:
    # train.epochs is a number: keys below it (a nested mapping) are refused at train.epochs.
    assert user_error(build_config, "tiny", {"train": {"epochs": {"max": 5}}}).startswith("config: train.epochs: ")
    path = tmp_path / "run.yaml"
    path.write_text("preset: tiny\nmodel:\n  family: mlp\n  widths: [8]\n")
    assert user_error(load_config, path) == f"{path}: model.widths: unknown key"  # the file is named


@pytest.mark.parametrize(("overrides", "where", "got"), [
    ({"train": {"epochs": 0}}, "train.epochs", "(got 0)"),
    ({"train": {"loss": "lsgan"}}, "train.loss", "(got 'lsgan')"),
    ({"model": {"family": "stylegan"}}, "model.family", "(got 'stylegan')"),
    ({"model": {"g_widths": [8, "wide"]}}, "model.g_widths.1", "(got 'wide')"),
    ({"serve": {"api_key_hash": "abc"}}, "serve.api_key_hash", "(got 'abc')"),
    ({"tune": {"scheduler": "hyperband"}}, "tune.scheduler", "(got 'hyperband')"),
])
def test_bad_values_name_the_key_and_the_value(overrides: dict, where: str, got: str) -> None:
    message = user_error(build_config, "tiny", overrides)
    assert message.startswith(f"config: {where}: ") and message.endswith(got), message


def test_cross_field_rules_say_how_to_fix() -> None:
    message = user_error(build_config, "tiny", {"train": {"global_batch": 10, "workers": 4}})
    assert "train.global_batch=10 is not divisible by train.workers=4" in message


def test_set_parses_dotted_keys_and_yaml_scalars() -> None:
    parsed = parse_set_option(["train.epochs=5", "train.g_lr=1.5e-4", "model.conditional=true",
                               "train.kimg=null", "model.g_widths=[16, 32]", "train.loss=hinge",
                               "serve.model_uri=s3://b/models/x=1", "a.b.c=d"])
    assert parsed == {
        "train": {"epochs": 5, "g_lr": 1.5e-4, "loss": "hinge", "kimg": None},
        "model": {"conditional": True, "g_widths": [16, 32]},
        "serve": {"model_uri": "s3://b/models/x=1"},  # only the first '=' splits
        "a": {"b": {"c": "d"}},
    }
    assert parse_set_option(["train.epochs=3", "train.epochs=4"]) == {"train": {"epochs": 4}}  # the last wins
    # YAML 1.1 reads 1e-4 (no dot) as a string; the config still takes it as the number.
    assert build_config("tiny", parse_set_option(["train.g_lr=1e-4"])).train.g_lr == 1e-4


@pytest.mark.parametrize(("items", "expected"), [
    (["train.epochs"], "--set 'train.epochs': expected KEY=VALUE"),
    (["train..epochs=3"], "is not a dotted key"),
    (["train.loss=[hinge"], "--set 'train.loss=[hinge': the value is not valid YAML"),
    (["train=5", "train.epochs=3"], "--set 'train.epochs=3': train was already set to a value"),
])
def test_bad_set_items_are_user_errors(items: list[str], expected: str) -> None:
    assert expected in user_error(parse_set_option, items)


@pytest.mark.parametrize(("sets", "expected"), [
    (["train.epochs"], "error: --set 'train.epochs': expected KEY=VALUE"),
    (["train.bogus=1"], "error: config: train.bogus: unknown key"),
    (["train.epochs=-1"], "error: config: train.epochs: Input should be greater than or equal to 1 (got -1)"),
])
def test_set_through_the_cli_is_exit_2_and_one_line(sets: list[str], expected: str, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    args = ["--store", str(store), "train", "--data", "digits", "--preset", "tiny"]
    code = main([*args, *(a for s in sets for a in ("--set", s))])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(expected) and "\n" not in err, err
    assert not store.exists()  # refused before anything was read, started or written


def test_the_console_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "genai_ray", "--store", str(tmp_path), "train", "--data", "digits",
                          "--set", "model.famly=dcgan"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "error: config: model.famly: unknown key"
