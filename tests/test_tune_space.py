"""Space files, promotion and the leaderboard: the parts of a campaign that need no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genai_ray import storage
from genai_ray.config import build_config
from genai_ray.errors import UserError
from genai_ray.store_lock import lock_uri
from genai_ray.tune.promote import HISTORY_FILE, promote
from genai_ray.tune.report import curves_png, leaderboard_csv, leaderboard_rows
from genai_ray.tune.space import load_space

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_space.yaml"


def test_example_space_is_valid_and_samples_build_configs():
    space = load_space(EXAMPLE)
    assert "train.g_lr" in space.params
    cfg = space.config_for({"train.g_lr": 3e-4, "model.g_widths": [256, 512, 1024]})
    assert cfg.train.g_lr == 3e-4 and cfg.model.g_widths == [256, 512, 1024]
    assert cfg.train.epochs == 12  # from base
    tune_space = space.tune_space()
    assert set(tune_space) == set(space.params)


@pytest.mark.parametrize("path", sorted([*EXAMPLE.parent.glob("*space*.yaml"),
                                         EXAMPLE.parents[1] / "bench" / "search_space.yaml"]), ids=lambda p: p.name)
def test_every_shipped_space_file_loads_and_builds_its_base_config(path):
    space = load_space(path)
    assert space.params, f"{path.name} searches nothing"
    assert space.config_for({}).train.eval_every > 0, f"{path.name}: trials must report eval/fd to be compared"
    build_config(space.preset, {"tune": space.base.get("tune", {})}, source=path.name)  # its campaign defaults


def test_a_seeded_random_search_samples_the_same_trials_in_the_same_order():
    """What makes ``bench.search_efficiency`` fair: ASHA and FIFO campaigns with one seed try the same configs."""
    from ray import tune

    from genai_ray.config import TuneConfig
    from genai_ray.tune.campaign import make_search

    tune.register_trainable("genai_ray_seed_probe", lambda config: None)
    space = load_space(EXAMPLE)

    def first_trials(seed: int) -> list[dict]:
        search = make_search(TuneConfig(seed=seed, max_concurrent=4))
        search.add_configurations({"c": {"run": "genai_ray_seed_probe", "config": space.tune_space(),
                                         "num_samples": 4}})
        return [search.next_trial().config for _ in range(4)]

    assert first_trials(0) == first_trials(0), "the same seed must sample the same trials"
    assert first_trials(0) != first_trials(1), "another seed must sample other trials"
    assert make_search(TuneConfig(max_concurrent=3)).max_concurrent == 3, "a campaign must never oversubscribe"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params: {train.g_lrr: {uniform: [0.1, 0.2]}}", "params.train.g_lrr"),
        ("params: {train.g_lr: {uniform: [0.1, 5]}}", "params.train.g_lr=5"),
        ("params: {train.g_lr: {normal: [0, 1]}}", "give exactly one of"),
        ("params: {train.g_lr: {loguniform: [0, 0.1]}}", "empty or not positive"),
        ("params: {model.family: {choice: [mlp, stylegan]}}", "model.family"),
        ("params: [1, 2]", "'params' must map"),
        ("scheduler: asha\nparams: {train.g_lr: {choice: [0.1]}}", "unknown top-level key 'scheduler'"),
        ("params: {train.g_lr: {uniform: [0.1, 0.2]}\n", "not valid YAML"),
    ],
)
def test_bad_space_files_name_the_key(tmp_path, text, expected):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="space.yaml") as err:
        load_space(path)
    assert expected in str(err.value)


def _package(store: str, version: str, fd: float | None) -> str:
    """A model.json-only package is enough for promotion, which reads metadata, not weights."""
    from genai_ray.package.format import ModelMeta, write_meta

    uri = storage.join(store, "models", "digits", version)
    meta = ModelMeta(name="digits", version=version, image_shape=(8, 8, 1), latent_dim=8, conditional=False,
                     class_names=None, class_probs=None, dataset_uri="x", dataset_sha256="0" * 64, config={},
                     metrics={} if fd is None else {"eval/fd": fd}, created_at="2026-01-01T00:00:00+00:00",
                     generator_sha256="0" * 64)
    write_meta(uri, meta)
    return uri


@pytest.mark.parametrize("where", ["local", "s3"])
def test_promotion_refuses_worse_unless_forced_and_records_history(tmp_path, s3_bucket, where):
    store = str(tmp_path) if where == "local" else s3_bucket + "/store"
    first, worse, best = _package(store, "v0001", 2.0), _package(store, "v0002", 3.0), _package(store, "v0003", 1.0)
    promote(store, "digits", first)
    with pytest.raises(UserError, match="refusing to promote .*v0002.*--force"):
        promote(store, "digits", worse)
    pointer = json.loads(storage.read_bytes(storage.join(store, "models", "digits", "champion.json")))
    assert pointer["version"] == "v0001", "a refused promotion must leave the champion unchanged"
    promote(store, "digits", best)
    forced = promote(store, "digits", worse, force=True)
    assert forced["forced"] and forced["previous"]["version"] == "v0003"
    history = json.loads(storage.read_bytes(storage.join(store, "models", "digits", HISTORY_FILE)))
    assert [h["version"] for h in history] == ["v0001", "v0003", "v0002"]
    assert history[1]["previous"]["score"] == 2.0


def test_promotion_needs_a_score(tmp_path):
    unevaluated = _package(str(tmp_path), "v0001", None)
    with pytest.raises(UserError, match="genai-ray evaluate"):
        promote(str(tmp_path), "digits", unevaluated)


def test_leaderboard_orders_by_mode_and_puts_missing_scores_last():
    trials = [{"trial": "a", "score": 2.0, "status": "TERMINATED", "epochs": 4, "params": {"train.g_lr": 1e-4}},
              {"trial": "b", "score": None, "status": "ERROR", "epochs": 0, "params": {}},
              {"trial": "c", "score": 1.0, "status": "TERMINATED", "epochs": 4, "params": {}}]
    assert [r["trial"] for r in leaderboard_rows(trials, "min")] == ["c", "a", "b"]
    assert [r["trial"] for r in leaderboard_rows(trials, "max")] == ["a", "c", "b"]
    text = leaderboard_csv(leaderboard_rows(trials, "min")).decode()
    assert text.splitlines()[0] == "rank,trial,status,epochs,score,params"
    assert "train.g_lr=0.0001" in text


def test_curves_png_is_a_png_with_content():
    png = curves_png({"t1": [(1, 3.0), (2, 2.0)], "t2": [(1, 4.0), (2, 1.5)]}, "eval/fd", "campaign")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@pytest.mark.parametrize("where", ["local", "s3"])
def test_concurrent_promotions_lose_no_history_entry(tmp_path, s3_bucket, where):
    """Eight promoters at once (forced, so all succeed): each read-modify-write of promotions.json runs under the
    model's lock, so the history keeps all eight and the champion is its last entry."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    store = str(tmp_path) if where == "local" else s3_bucket + "/store"
    uris = [_package(store, f"v{i:04d}", float(i)) for i in range(1, 9)]
    start = threading.Barrier(len(uris))

    def one(uri: str) -> dict:
        start.wait()
        return promote(store, "digits", uri, force=True)

    with ThreadPoolExecutor(len(uris)) as pool:
        pointers = list(pool.map(one, uris))
    history = json.loads(storage.read_bytes(storage.join(store, "models", "digits", HISTORY_FILE)))
    assert sorted(h["version"] for h in history) == [f"v{i:04d}" for i in range(1, 9)]
    champion = json.loads(storage.read_bytes(storage.join(store, "models", "digits", "champion.json")))
    assert champion["version"] == history[-1]["version"]
    # Each promotion saw the one before it: the chain of "previous" pointers is the history's order.
    previous = [h["previous"] and h["previous"]["version"] for h in history]
    assert previous == [None, *[h["version"] for h in history[:-1]]]
    assert {p["version"] for p in pointers} == {h["version"] for h in history}
    if where == "s3":  # the lock object is deleted after each promotion
        assert not storage.exists(lock_uri(store, "digits"))


def test_asha_rungs_follow_the_grace_and_reduction_factor_of_the_tune_config():
    from genai_ray.tune.campaign import make_scheduler

    space = load_space(EXAMPLE)
    rungs = {}
    for factor in (2, 3):
        cfg = build_config("tiny", {"tune": {"grace_epochs": 4, "reduction_factor": factor}}).tune
        rungs[factor] = sorted(milestone for milestone, _ in make_scheduler(space, cfg, 40)._brackets[0]._rungs)
    assert rungs == {2: [4, 8, 16, 32], 3: [4, 12, 36]}
    with pytest.raises(UserError, match="reduction_factor"):
        build_config("tiny", {"tune": {"reduction_factor": 1}})
