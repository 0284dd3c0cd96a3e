"""Names that become store paths: one check, applied at every flag and API that takes a model, run or dataset name."""

from __future__ import annotations

from pathlib import Path

import pytest

from genai_ray.cli import main
from genai_ray.errors import UserError
from genai_ray.names import check_name, safe_name
from genai_ray.package.format import resolve_model_uri

BAD = ["a/../../b", "..", "a/b", "a\\b", "", "a..b", "sp ace", "caf\u00e9", "x" * 129]


@pytest.mark.parametrize("bad", BAD)
def test_bad_names_are_one_line_user_errors(bad: str) -> None:
    with pytest.raises(UserError, match="model name") as err:
        check_name(bad, "model name")
    assert "\n" not in str(err.value) and "no '..' and no path separators" in str(err.value)


@pytest.mark.parametrize("good", ["digits", "digits-v2_1.0", "A", "x" * 128, ".hidden"])
def test_good_names_pass_unchanged(good: str) -> None:
    assert check_name(good) == good


def test_derived_names_are_made_valid() -> None:
    assert safe_name("my photos.2024", "dataset") == "my-photos-2024"
    assert safe_name("../..", "dataset") == "dataset"
    assert check_name(safe_name("a/../../b c", "x")) == "a-b-c"


@pytest.mark.parametrize("ref", ["a/../../b", "a/b/c", "champion:../x", "toy/latest"])
def test_model_references_cannot_leave_the_models_folder(ref: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model name|model reference|use NAME"):
        resolve_model_uri(ref, str(tmp_path))


@pytest.mark.parametrize(("args", "flag"), [
    (["data", "prepare", "digits", "--name", "a/../../b"], "--name"),
    (["data", "prepare", "digits", "--name", ".."], "--name"),
    (["generate", "--model", "a/../../b", "--out", "x.png"], "model reference"),
    (["generate", "--model", "champion:a..b", "--out", "x.png"], "model name"),
    (["promote", "--model", "toy/v0001", "--name", "a/b"], "--name"),
    (["train", "--data", "digits", "--name", "a/b"], "--name"),
    (["tune", "--data", "digits", "--space", "nowhere.yaml", "--model-name", ".."], "--model-name"),
])
def test_cli_refuses_bad_names_in_one_line_with_exit_2(args: list[str], flag: str, store: str, capsys) -> None:
    assert main(["--store", store, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}") and err.count("\n") == 1, err
    assert not (Path(store).parent / "b").exists() and not any(Path(store).parent.glob("**/b"))


def test_cli_prepares_under_a_good_name(store: str, capsys) -> None:
    assert main(["--store", store, "data", "prepare", "shapes", "--count", "40", "--name", "shapes_v1.0"]) == 0
    assert (Path(store) / "datasets" / "shapes_v1.0" / "manifest.json").is_file()
