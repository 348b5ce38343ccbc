"""The training step: how many CPU streams a rank uses, and that splitting a batch over them changes nothing but speed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")
import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from trainer.model import TransformerLM  # noqa: E402
from trainer.step import EvalStep, TrainStep, _row_slices, streams_for_cores  # noqa: E402

# (batch_size, usable cores, machine cores, launcher environment, expected streams)
STREAM_CASES = [
    (16, 2, 2, {}, 2),  # one process on a 2-core machine: both cores
    (16, 8, 8, {}, 8),
    (4, 8, 8, {}, 4),  # never more streams than rows
    (1, 8, 8, {}, 1),
    (16, 1, 2, {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 1),  # mpirun pinned this rank to one core
    (16, 4, 8, {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 4),  # pinned to a socket: those cores are this rank's
    (16, 8, 8, {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 4),  # unpinned: share the machine with the other local rank
    (16, 2, 2, {"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 1),  # oversubscribed: still one stream
    (16, 8, 8, {"MPI_LOCALNRANKS": "4"}, 2),
    (16, 8, 8, {"OMPI_COMM_WORLD_LOCAL_SIZE": ""}, 8),
]


@pytest.mark.parametrize(("batch_size", "usable", "machine", "env", "expected"), STREAM_CASES)
def test_streams_follow_the_cores_this_rank_has(batch_size, usable, machine, env, expected):
    assert streams_for_cores(batch_size, usable, machine, env) == expected


@pytest.mark.parametrize(
    ("rows", "parts", "expected"),
    [(16, 2, [(0, 8), (8, 16)]), (4, 3, [(0, 1), (1, 2), (2, 4)]), (2, 4, [(0, 1), (1, 2)]), (5, 1, [(0, 5)])],
)
def test_row_slices_cover_every_row_once(rows, parts, expected):
    assert _row_slices(rows, parts) == expected


def tiny_training(streams: int, steps: int = 3, batch: int = 4, clip: float = 1.0) -> tuple[list[float], dict, float]:
    """Train a tiny model a few steps; returns the losses, the final weights and an eval loss."""
    mx.random.seed(3)
    model = TransformerLM(257, 16, 1, 32, 2, 2)
    optimizer = optim.AdamW(learning_rate=1e-2, weight_decay=0.1)
    optimizer.init(model.trainable_parameters())
    mx.eval(model.parameters(), optimizer.state)
    step = TrainStep(model, optimizer, clip, world_size=1, streams=streams)
    data = mx.random.randint(0, 257, (steps + 1, batch, 17))
    losses = []
    for index in range(steps):
        local, mean = step([(data[index, :, :-1], data[index, :, 1:])])
        assert local == mean  # one process: the mean over ranks is this rank's loss
        losses.append(local)
    val_loss = EvalStep(model, world_size=1, streams=streams)([(data[steps, :, :-1], data[steps, :, 1:])])
    return losses, dict(tree_flatten(model.parameters())), val_loss


@pytest.fixture(scope="module")
def one_stream() -> tuple[list[float], dict, float]:
    return tiny_training(streams=1)


@pytest.mark.parametrize("streams", [2, 3])  # 3 streams split 4 rows unevenly (1, 1, 2): weighted by rows
def test_split_batch_trains_like_the_whole_batch(one_stream, streams):
    losses, weights, val_loss = tiny_training(streams)
    reference_losses, reference_weights, reference_val = one_stream
    assert losses == pytest.approx(reference_losses, abs=1e-5)
    assert val_loss == pytest.approx(reference_val, abs=1e-5)
    assert weights.keys() == reference_weights.keys()
    assert max(mx.abs(weights[k] - reference_weights[k]).max().item() for k in weights) <= 1e-5


def test_split_batch_is_deterministic():
    # Exact resume compares losses for equality: the parallel streams must not change the arithmetic order.
    first, second = tiny_training(2), tiny_training(2)
    assert first[0] == second[0] and first[2] == second[2]
    assert all(mx.array_equal(first[1][k], second[1][k]).item() for k in first[1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread CPU time is read from /proc")
def test_split_batch_runs_on_parallel_threads():
    def cpu_by_thread() -> dict[str, int]:
        times = {}
        for thread in os.listdir("/proc/self/task"):
            try:
                times[thread] = int(Path(f"/proc/self/task/{thread}/schedstat").read_text().split()[0])
            except OSError:  # the thread ended
                pass
        return times

    mx.random.seed(0)
    model = TransformerLM(257, 64, 2, 64, 2, 4)
    optimizer = optim.AdamW(learning_rate=1e-3)
    optimizer.init(model.trainable_parameters())
    mx.eval(model.parameters(), optimizer.state)
    step = TrainStep(model, optimizer, 1.0, world_size=1, streams=2)
    batch = mx.random.randint(0, 257, (8, 65))
    micro_batches = [(batch[:, :-1], batch[:, 1:])]
    step(micro_batches)  # compiles
    before = cpu_by_thread()
    step(micro_batches)
    after = cpu_by_thread()
    busy = sorted((after[t] - before.get(t, 0) for t in after), reverse=True)
    # The forward and backward passes are nearly all the work: two threads share it about equally.
    assert busy[1] >= 0.3 * busy[0], busy


def test_gradient_accumulation_with_streams_matches_one_stream():
    def accumulate(streams: int) -> dict:
        mx.random.seed(5)
        model = TransformerLM(257, 16, 1, 32, 2, 2)
        optimizer = optim.AdamW(learning_rate=1e-2)
        optimizer.init(model.trainable_parameters())
        mx.eval(model.parameters(), optimizer.state)
        step = TrainStep(model, optimizer, 0.0, world_size=1, streams=streams)
        data = mx.random.randint(0, 257, (2, 4, 17))
        step([(data[0, :, :-1], data[0, :, 1:]), (data[1, :, :-1], data[1, :, 1:])])
        return dict(tree_flatten(model.parameters()))

    split, whole = accumulate(2), accumulate(1)
    assert max(mx.abs(split[k] - whole[k]).max().item() for k in whole) <= 1e-5


def test_uncompiled_split_step_matches_the_compiled_whole_step():
    # compile=False takes the same split path (the flag is for debugging): it must train the same.
    def one_step(compile: bool, streams: int) -> dict:
        mx.random.seed(1)
        model = TransformerLM(257, 16, 1, 32, 2, 2)
        optimizer = optim.AdamW(learning_rate=1e-2)
        optimizer.init(model.trainable_parameters())
        mx.eval(model.parameters(), optimizer.state)
        data = mx.random.randint(0, 257, (4, 17))
        TrainStep(model, optimizer, 1.0, world_size=1, compile=compile, streams=streams)([(data[:, :-1], data[:, 1:])])
        return dict(tree_flatten(model.parameters()))

    split, whole = one_step(False, 2), one_step(True, 1)
    assert max(mx.abs(split[k] - whole[k]).max().item() for k in whole) <= 1e-5
