"""The training input on its own (no Ray): stream mode's order, equal split, bounded memory, and the mode choice."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from genai_ray.data.prepare import prepare
from genai_ray.data.reader import open_dataset
from genai_ray.data.sources import open_source
from genai_ray.errors import IntegrityError, UserError
from genai_ray.train.input import (
    StreamInput,
    StreamSpec,
    choose_mode,
    epoch_batches,
    epoch_slices,
    make_dataset,
    row_groups,
    shard_bytes,
    stream_dataset,
)

SIDE = 16


def numbered(tmp_path: Path, n: int, shard_rows: int) -> tuple[StreamSpec, int]:
    """A dataset whose image i carries i in its first two pixels; (spec at batch 32 x 2 workers, train rows)."""
    x = np.zeros((n, SIDE, SIDE, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n) % 256, np.arange(n) // 256
    x[:, 1:] = np.random.default_rng(0).integers(0, 256, (n, SIDE - 1, SIDE, 3), dtype=np.uint8)
    np.savez(tmp_path / "numbered.npz", x=x)
    uri = str(tmp_path / "ds")
    prepare(open_source(str(tmp_path / "numbered.npz")), uri, name="numbered", holdout=0.0, shard_rows=shard_rows,
            progress=False)
    ds = open_dataset(uri)
    return StreamSpec(row_groups(ds.shard_uris("train")), ds.manifest.train_count // 64, 300), ds.manifest.train_count


def ids(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) + 256 * images[:, 0, 1, 0].astype(np.int64)


def rank_ids(spec: StreamSpec, seed: int, epoch: int, rank: int, world: int = 2, batch: int = 32) -> list[np.ndarray]:
    return [ids(x) for x, _ in epoch_batches(spec, seed, epoch, rank, world, batch)]


@pytest.fixture(scope="module")
def numbered_spec(tmp_path_factory) -> tuple[StreamSpec, int]:
    # 3,000 rows in shards of 1,100: row groups of 1,024, 76, 1,024, 76 and 800 rows, so ranks straddle groups.
    return numbered(tmp_path_factory.mktemp("numbered"), 3000, 1100)


def test_every_rank_gets_the_same_steps_disjoint_rows_and_only_a_short_tail_is_skipped(numbered_spec):
    spec, n = numbered_spec
    per_rank = [rank_ids(spec, seed=0, epoch=1, rank=r) for r in range(2)]
    assert [len(b) for b in per_rank] == [spec.steps_per_epoch] * 2 == [n // 64] * 2
    seen = [np.concatenate(b) for b in per_rank]
    assert all(len(np.unique(s)) == len(s) == spec.steps_per_epoch * 32 for s in seen), "no row twice in an epoch"
    assert not set(seen[0].tolist()) & set(seen[1].tolist()), "no row on two ranks"
    skipped = n - len(seen[0]) - len(seen[1])
    assert 0 <= skipped < 64, "the tail skipped is shorter than one global batch"


def test_same_seed_same_batches_other_epoch_or_seed_another_order(numbered_spec):
    spec, _ = numbered_spec
    first = rank_ids(spec, seed=5, epoch=1, rank=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, rank_ids(spec, seed=5, epoch=1, rank=0), strict=True))
    assert not np.array_equal(first[0], rank_ids(spec, seed=5, epoch=2, rank=0)[0])
    assert not np.array_equal(first[0], rank_ids(spec, seed=6, epoch=1, rank=0)[0])


def test_the_permutation_of_row_groups_changes_with_the_epoch(numbered_spec):
    spec, _ = numbered_spec
    orders = {tuple(g for g, _, _ in epoch_slices(spec.groups, 0, e, 0, 1, spec.steps_per_epoch * 64))
              for e in range(1, 7)}
    assert len(orders) > 1, "six epochs read the five row groups in more than one order"


def test_the_shuffle_buffer_mixes_rows_across_the_reading_order(numbered_spec):
    spec, _ = numbered_spec
    batches = rank_ids(spec, seed=0, epoch=1, rank=0)
    steps = np.diff(np.concatenate(batches))
    assert np.mean(np.abs(steps) == 1) < 0.1, "consecutive rows are not read out as runs"
    # A buffer of 300 rows: the first batch is drawn from the first 300 rows read, not the first 32.
    assert np.ptp(batches[0]) > 32


def test_streaming_memory_is_bounded_by_the_buffer_not_the_dataset(tmp_path: Path):
    # 12,000 16x16x3 images: 9.2 MB of pixels; the buffer is 300 rows (230 kB), row groups 1,024 rows (786 kB).
    spec, n = numbered(tmp_path, 12_000, 4096)
    spec = StreamSpec(spec.groups, n // 32, 300)  # one worker at batch 32 reads every row
    dataset_bytes = n * SIDE * SIDE * 3
    tracemalloc.start()
    steps = sum(1 for _ in epoch_batches(spec, 0, 1, 0, 1, 32))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert steps == n // 32
    # Python-side peak (numpy arrays; Arrow's own buffers are not traced, and are one row group each): the
    # buffer, a few row groups in flight and their slices, far below a quarter of the dataset.
    assert peak < dataset_bytes / 4, f"peak {peak:,} bytes while streaming {dataset_bytes:,} bytes"


def test_a_shard_missing_mid_stream_names_its_uri(tmp_path: Path):
    spec, _ = numbered(tmp_path, 3000, 1100)
    gone = spec.groups[-1].uri
    Path(gone).unlink()
    with pytest.raises(IntegrityError, match=rf"^{gone}: shard became unreadable mid-stream"):
        for _ in epoch_batches(spec, 0, 1, 0, 1, 32):
            pass


def test_tf_stream_resumed_at_an_epoch_gives_the_batches_of_an_uninterrupted_run(numbered_spec):
    spec, _ = numbered_spec
    steps = spec.steps_per_epoch

    def take(first_epoch: int, n: int) -> list[np.ndarray]:
        ds = stream_dataset(spec, (SIDE, SIDE, 3), 3, first_epoch, 1, 2, 32)
        return [ids(x.numpy()) for x, _ in ds.take(n)]

    uninterrupted = take(1, 3 * steps)
    resumed = take(3, steps)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted[2 * steps :], resumed, strict=True))
    assert not np.array_equal(uninterrupted[0], uninterrupted[steps]), "epoch 2 starts with other rows than epoch 1"


def test_neither_pipeline_runs_tf_datas_autotuning_thread(numbered_spec):
    """Deleting an iterator waits for that thread's next wake-up, which idled campaign slots between trials."""
    spec, _ = numbered_spec
    memory = make_dataset(np.zeros((64, SIDE, SIDE, 3), np.uint8), np.zeros(64, np.int64), 32, 0)
    stream = stream_dataset(spec, (SIDE, SIDE, 3), 3, 1, 0, 2, 32)
    for ds in (memory, stream):
        assert ds.options().autotune.enabled is False
        assert next(iter(ds))[0].shape == (32, SIDE, SIDE, 3)


def test_a_stream_resumed_at_a_kimg_tick_inside_an_epoch_continues_where_the_run_was(numbered_spec):
    """kimg ticks don't line up with data epochs: a tick of 3 steps against epochs of ``steps`` steps. An attempt
    starting at tick 4 must see exactly the batches from step 9 of the uninterrupted stream on."""
    spec, _ = numbered_spec
    steps, per_tick = spec.steps_per_epoch, 3
    assert steps >= 9 and steps % per_tick, "the fixture's epoch must be 9+ steps, not a whole number of ticks"
    uninterrupted = [ids(x.numpy()) for x, _ in stream_dataset(spec, (SIDE, SIDE, 3), 3, 1, 1, 2, 32).take(2 * steps)]
    epoch, skip = StreamInput(spec, (SIDE, SIDE, 3), 3, 1, 2, steps_per_tick=per_tick).start(4)
    assert (epoch, skip) == (1 + 9 // steps, 9 % steps)
    resumed = stream_dataset(spec, (SIDE, SIDE, 3), 3, epoch, 1, 2, 32, skip).take(steps)
    assert all(np.array_equal(a, ids(x.numpy())) for a, (x, _) in zip(uninterrupted[9:], resumed, strict=False))


def test_auto_keeps_a_shard_that_fits_streams_one_that_does_not_and_memory_over_budget_is_refused():
    need = shard_bytes(200_000, (64, 64, 3), 2)
    assert need == 2 * 100_000 * (64 * 64 * 3 + 8)
    assert choose_mode("auto", need, need, "test")[0] == "memory"
    mode, why = choose_mode("auto", need, need - 1, "test")
    assert mode == "stream" and why.startswith("auto: each worker's shard needs 2.29 GiB in memory")
    assert why.endswith("so it streams")
    assert choose_mode("stream", 1, 10, "test") == ("stream", "train.data_mode=stream")
    with pytest.raises(UserError, match=r"^train\.data_mode=memory: each worker's shard needs 2\.29 GiB in memory, "
                                        r"its budget is 1\.00 GiB \(test\); use train\.data_mode=stream"):
        choose_mode("memory", need, 1 << 30, "test")
