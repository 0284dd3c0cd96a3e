"""Inline Tune trials: single-worker trials train in their own (reused) Tune actor, with the same loop as Ray
Train's workers. Reuse must not leak state between trials, PBT must really continue from the winner's weights,
and a campaign whose driver is SIGKILLed must resume without re-running finished work."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genai_ray import storage
from genai_ray.tune.campaign import TrialMode, run_campaign
from genai_ray.tune.space import load_space
from tests.helpers import space_file, tune_cfg


def histories(root: Path) -> dict[str, list[dict]]:
    """Every trial's reports, keyed by its folder name."""
    out = {}
    for result in root.glob("*/result.json"):
        out[result.parent.name] = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
    return out


@pytest.mark.slow  # two campaigns
def test_trials_back_to_back_in_a_reused_actor_match_fresh_actors(ray_local, digits_uri, tmp_path):
    """The second trial of a reused actor trains exactly as it would in a fresh process: a leaked graph, RNG
    state, optimiser slot or Keras name would change its losses."""
    space = load_space(space_file(tmp_path, epochs=2))
    runs = {}
    for reuse in (True, False):
        store = str(tmp_path / f"store-{reuse}")
        run_campaign(space, digits_uri, name="pair", store=store, mode=TrialMode(reuse_actors=reuse),
                     tune_cfg=tune_cfg(samples=2, scheduler="fifo", max_concurrent=1, seed=5))
        runs[reuse] = histories(Path(store) / "campaigns" / "pair")
    by_params = {}
    for reuse, trials in runs.items():
        assert len(trials) == 2
        pids = {reports[0]["pid"] for reports in trials.values()}
        assert len(pids) == (1 if reuse else 2), f"reuse_actors={reuse}: trials ran in processes {pids}"
        for reports in trials.values():
            key = tuple(sorted(reports[0]["config"].items()))
            by_params.setdefault(key, {})[reuse] = [
                (r["epoch"], r["loss/d"], r["loss/g"], r["eval/fd"], r["step"]) for r in reports]
    assert len(by_params) == 2, "the seeded search samples the same two trials in both campaigns"
    archs = {dict(k)["model.latent_dim"] for k in by_params}
    for key, curves in by_params.items():
        # Same seeds, same ops, same thread settings on CPU: the reports are bit-identical, so no tolerance.
        assert curves[True] == curves[False], f"trial {dict(key)} differs in a reused actor (latent_dims {archs})"


@pytest.mark.slow  # a PBT campaign
def test_pbt_exploit_starts_from_the_winners_weights_at_the_perturbed_rates(ray_local, digits_uri, tmp_path):
    """Proof by weights: the exploiting trial's G, D and EMA at its first step are the winner's checkpoint
    tensors (sha256 of each network's weights), and it runs at its perturbed learning rates. The same check
    must reject the trial's own checkpoint at that epoch, so it can tell the two apart."""
    from genai_ray.config import Config
    from genai_ray.gan.trainer import GanTrainer
    from genai_ray.train.loop import restore, weights_digest

    store = str(tmp_path / "store")
    epochs, interval = 5, 3
    space = load_space(space_file(tmp_path, epochs=epochs))
    run_campaign(space, digits_uri, name="pbt", store=store, mode=TrialMode(pbt_sync=True),
                 tune_cfg=tune_cfg(samples=2, scheduler="pbt", perturbation_interval=interval, max_concurrent=2))
    root = Path(store) / "campaigns" / "pbt"
    [policy] = [json.loads(line) for line in (root / "pbt_global.txt").read_text().splitlines()]
    new_config, winner_config = policy[5], policy[4]
    [loser_id] = [p.stem.removeprefix("pbt_policy_") for p in root.glob("pbt_policy_*.txt")]
    trial_dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("trial_")]
    [loser_dir] = [p for p in trial_dirs if loser_id in p.name]
    [winner_dir] = [p for p in trial_dirs if p != loser_dir]

    def checkpoints(trial_dir: Path) -> dict[int, tuple[Path, dict]]:
        out = {}
        for meta_file in trial_dir.glob("checkpoint_*/meta.json"):
            meta = json.loads(meta_file.read_text())
            out.setdefault(meta["epoch"], []).append((meta_file.parent, meta))
        return out

    loser, winner = checkpoints(loser_dir), checkpoints(winner_dir)
    after = [m for _, m in loser[epochs]]
    [started] = [m["started_from"] for m in after]
    assert started["epoch"] == interval, started

    def digest_of(folder: Path, meta: dict) -> dict[str, str]:
        """The checkpoint's tensors, loaded into a trainer built from the config the checkpoint saved."""
        trainer = GanTrainer(Config.model_validate(meta["config"]), tuple(meta["plan"]["image_shape"]),
                             meta["plan"]["num_classes"])
        assert restore(trainer, str(folder)) == interval
        return weights_digest(trainer)

    [(winner_folder, winner_meta)] = winner[interval]
    winner_digest = digest_of(winner_folder, winner_meta)
    assert winner_meta["weights_sha256"] == winner_digest, "a checkpoint's recorded digest is not its tensors'"
    assert set(started["weights_sha256"]) == {"g", "d", "ema"}
    assert started["weights_sha256"] == winner_digest, (
        "the exploiting trial's first step did not start from the winner's checkpoint tensors")
    # The trial's own state at the exploit, from its first run's record: Tune may have replaced the checkpoint
    # folder of that report (docs/tuning.md).
    def recorded(trial_id: str) -> dict[str, str]:
        first_run = Path(store) / "runs" / f"tune-pbt-{trial_id}-r0"
        return json.loads((first_run / "digests" / f"{interval:05d}.json").read_text())["weights_sha256"]

    winner_id = winner_dir.name.split("_")[1] + "_" + winner_dir.name.split("_")[2]
    assert recorded(winner_id) == winner_digest, "a run's digest record is not its checkpoint's tensors"
    own_digest = recorded(loser_id)
    assert set(own_digest) == {"g", "d", "ema"}
    assert started["weights_sha256"] != own_digest, (
        "the check cannot tell the winner's checkpoint from the trial's own: it proves nothing")
    history = next(v for k, v in histories(root).items() if loser_id in k)
    first_after = next(h for h in history if h.get("init/epoch"))
    assert first_after["hp/g_lr"] == pytest.approx(new_config["train.g_lr"], rel=1e-5)
    assert first_after["hp/d_lr"] == pytest.approx(new_config["train.d_lr"], rel=1e-5)
    assert new_config["train.g_lr"] != pytest.approx(winner_config["train.g_lr"], rel=1e-3), (
        "precondition: PBT perturbed the winner's rate, so the two are distinguishable")


def s3_checkpoints(campaign: str) -> dict[str, dict[str, dict]]:
    """{trial folder: {checkpoint folder: meta.json}} of a campaign on the store."""
    out = {}
    for trial in storage.list_dir(campaign):
        if not trial.startswith("trial_"):
            continue
        found = {}
        for name in storage.list_dir(storage.join(campaign, trial)):
            meta = storage.join(campaign, trial, name, "meta.json")
            if name.startswith("checkpoint_") and storage.exists(meta):
                found[name] = json.loads(storage.read_bytes(meta))
        out[trial] = found
    return out


def state_records_a_checkpoint(campaign: str, trial_folders: list[str]) -> bool:
    """Whether the campaign state Tune last uploaded has a checkpoint of one of these trials: Tune resumes a trial
    from what that state records (saved every campaign.STATE_SYNC_S), not from its folder."""
    states = sorted(n for n in storage.list_dir(campaign) if n.startswith("experiment_state-"))
    if not states:
        return False
    data = json.loads(storage.read_bytes(storage.join(campaign, states[-1])))
    for trial_state, runtime in data["trial_data"]:
        trial_id = json.loads(trial_state)["trial_id"]
        recorded = json.loads(runtime)["last_result"].get("checkpoint_dir_name")
        if recorded and any(folder.startswith(f"trial_{trial_id}_") for folder in trial_folders):
            return True
    return False


@pytest.mark.slow  # a campaign whose driver is SIGKILLed, then resumed
@pytest.mark.timeout(900)
def test_sigkilled_campaign_driver_resumes_on_s3(ray_local, digits_uri, tmp_path, s3_bucket, capsys):
    """Fault: SIGKILL the `genai-ray tune` driver while one trial has finished and the next is mid-run.
    Expect from `genai-ray tune --resume`: the finished trial writes nothing more; the running trial continues
    from one of its checkpoints (never from scratch) and every trial reaches the last epoch."""
    from genai_ray.cli import main

    epochs = 24
    store = f"{s3_bucket}/store"
    space = space_file(tmp_path, epochs=epochs)
    args = ["--store", store, "tune", "--data", digits_uri, "--space", str(space), "--samples", "3",
            "--max-concurrent", "1", "--scheduler", "fifo", "--name", "killed"]
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "genai_ray", *args], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    campaign = f"{store}/campaigns/killed"
    deadline = time.monotonic() + 420
    before: dict[str, dict[str, dict]] = {}
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        before = s3_checkpoints(campaign) if storage.exists(campaign) else {}
        done = [t for t, c in before.items() if any(m["epoch"] == epochs for m in c.values())]
        running = [t for t, c in before.items() if c and t not in done]
        # Kill once Tune's uploaded state holds the finished trial and a checkpoint of the running one: a checkpoint
        # written after the last upload is retrained on resume, and a trial with none recorded starts afresh.
        if done and running and state_records_a_checkpoint(campaign, running):
            break
    tail = (tmp_path / "driver.log").read_text()[-3000:]
    assert driver.poll() is None, f"the campaign ended before the fault: {tail}"
    assert running, f"no trial was mid-run by the deadline: {before}"
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: no shutdown, no final state upload
    driver.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)  # then its private local Ray, which would linger
    before = s3_checkpoints(campaign)
    done = {t for t, c in before.items() if any(m["epoch"] == epochs for m in c.values())}
    capsys.readouterr()
    code = main([*args, "--resume"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    after = s3_checkpoints(campaign)
    for trial in done:
        assert after[trial] == before[trial], f"finished trial {trial} trained again after the resume"
    for trial, kept in after.items():
        new = {name: meta for name, meta in kept.items() if before.get(trial, {}).get(name) != meta}
        epochs_seen = sorted(m["epoch"] for m in kept.values())
        assert epochs_seen[-1] == epochs, f"trial {trial} did not finish: epochs {epochs_seen}"
        if trial not in before or not before[trial] or not new:
            continue
        starts = {m["resumed_from"] for m in new.values()}
        [resumed_from] = starts
        had = sorted(m["epoch"] for m in before[trial].values())
        print(f"trial {trial}: checkpoints up to epoch {had[-1]} before the kill, resumed from epoch {resumed_from}")
        assert resumed_from in had, f"trial {trial} resumed from epoch {resumed_from}, not one of its checkpoints {had}"
        assert sorted(m["epoch"] for m in new.values()) == list(range(resumed_from + 1, epochs + 1)), (
            f"trial {trial} must continue epoch by epoch from {resumed_from}")
    assert len(after) == 3


@pytest.mark.slow  # a campaign, then its refused resume
def test_a_resume_with_another_space_file_is_refused_naming_both(ray_local, digits_uri, tmp_path, capsys):
    from genai_ray.cli import main

    store = str(tmp_path / "store")
    space = space_file(tmp_path, epochs=1)
    args = ["--store", store, "tune", "--data", digits_uri, "--samples", "1", "--scheduler", "fifo", "--name", "c"]
    assert main([*args, "--space", str(space)]) == 0
    other = tmp_path / "other.yaml"
    other.write_text(space.read_text().replace("choice: [8, 16]", "choice: [8, 32]"))
    capsys.readouterr()
    assert main([*args, "--space", str(other), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(space) in err and str(other) in err and len(err.splitlines()) == 1, err


def test_bad_campaign_input_is_one_line_before_any_trial(ray_local, digits_uri, tmp_path, capsys):
    from genai_ray.cli import main

    store = tmp_path / "store"
    good = space_file(tmp_path, epochs=1)
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.read_text().replace("train.d_lr", "train.d_lrr"))
    common = ["--store", str(store), "tune", "--data", digits_uri, "--name", "bad"]
    cases = {
        "unknown key": ([*common, "--space", str(typo)], "train.d_lrr"),
        "optuna with pbt": ([*common, "--space", str(good), "--scheduler", "pbt", "--search", "optuna"], "optuna"),
        "missing campaign": ([*common, "--space", str(good), "--resume"], "nothing to resume"),
    }
    for case, (argv, needle) in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, case
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, (case, err)
    assert not (store / "runs").exists() and not (store / "campaigns").exists(), "a refused campaign wrote files"


def test_thread_settings_that_a_reused_actor_cannot_change_are_refused(tmp_path):
    from genai_ray.errors import UserError
    from genai_ray.tune.campaign import check_thread_settings

    path = tmp_path / "families.yaml"
    path.write_text("preset: tiny\nbase: {train: {cpus_per_worker: 2}}\nparams:\n"
                    "  model.family: {choice: [mlp, dcgan]}\n")
    with pytest.raises(UserError, match="model.family"):
        check_thread_settings(load_space(path), tune_cfg())
    check_thread_settings(load_space(path), tune_cfg(), TrialMode(runner="train"))  # Train runs are fresh processes
