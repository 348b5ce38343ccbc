"""The real trainer as a process and under `mpirun -np 2` on this machine: events, exact resume, 2-rank correctness."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.events import CheckpointEvent, DoneEvent, ErrorEvent, EvalEvent, NodeEvent, RawLine, StartEvent, StepEvent, parse_line

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n_layers", "2", "--d_model", "32", "--n_heads", "2", "--seq_len", "32", "--warmup_steps", "2", "--node_every_s", "0"]
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)")


def run_trainer(workdir: Path, *flags: str, ranks: int = 1) -> tuple[int, list, str]:
    """Run `python -m trainer` (under mpirun when ranks > 1) in workdir; returns (exit status, parsed lines, stderr)."""
    argv = [sys.executable, "-m", "trainer", *TINY, *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if ranks > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        argv = ["mpirun", "-np", str(ranks), "--oversubscribe", *argv]
    result = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    return result.returncode, [parse_line(line) for line in result.stdout.splitlines()], result.stderr


def of(lines: list, kind: type, rank: int | None = None) -> list:
    return [e for e in lines if isinstance(e, kind) and (rank is None or e.rank == rank)]


def final_weights(checkpoints: Path) -> dict:
    import mlx.core as mx

    newest = sorted(checkpoints.glob("step_*"))[-1]
    return mx.load(str(newest / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list, str]:
    """Eight steps as one process, with evals and checkpoints; shared by the event and resume tests."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    status, lines, stderr = run_trainer(workdir, "--steps", "8", "--eval_every", "3", "--checkpoint_every", "4", "--batch_size", "4")
    return workdir, status, lines, stderr


def test_one_process_run_emits_every_event(uninterrupted):
    workdir, status, lines, stderr = uninterrupted
    assert status == 0, stderr
    assert not of(lines, RawLine), "every stdout line is an event"
    assert isinstance(lines[0], StartEvent) and lines[0].world_size == 1 and lines[0].rank == 0
    # The start event says which BLAS MLX's matmuls call: this machine's OpenBLAS (./dev system installs it).
    assert "openblas" in lines[0].blas or (ctypes.util.find_library("openblas") is None and lines[0].blas == "bundled")
    steps = of(lines, StepEvent)
    assert [e.step for e in steps] == list(range(1, 9))  # steps count from 1
    first = steps[0]
    assert first.loss == first.loss_mean and first.learning_rate == 0.0
    assert first.step_time_s > 0 and first.tokens_per_s > 0 and first.tokens == 4 * 32
    assert first.mlx_peak_bytes >= first.mlx_active_bytes > 0 and first.rss_bytes > 0
    assert [e.step for e in of(lines, EvalEvent)] == [3, 6, 8]  # and once more at the end
    assert [e.step for e in of(lines, CheckpointEvent)] == [4, 8]
    assert of(lines, NodeEvent)[0].ram_total_bytes > of(lines, NodeEvent)[0].ram_used_bytes > 0
    assert isinstance(lines[-1], DoneEvent) and lines[-1].step == 8
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["step_000004", "step_000008"]


def test_resume_continues_exactly(uninterrupted, tmp_path):
    workdir, status, reference, stderr = uninterrupted
    assert status == 0, stderr
    flags = ["--eval_every", "3", "--checkpoint_every", "4", "--batch_size", "4"]
    status, first_part, stderr = run_trainer(tmp_path, "--steps", "8", "--checkpoint_every", "5", "--eval_every", "3", "--batch_size", "4")
    assert status == 0, stderr
    assert [e.loss for e in of(first_part, StepEvent)] == [e.loss for e in of(reference, StepEvent)]
    # Stop after step 5 by resuming from that checkpoint, not from the end: drop later checkpoints.
    for later in (tmp_path / "checkpoints").glob("step_*"):
        if later.name != "step_000005":
            shutil.rmtree(later)
    status, resumed, stderr = run_trainer(tmp_path, "--steps", "8", *flags, "--resume", "checkpoints", "--checkpoint_dir", "resumed")
    assert status == 0, stderr
    expected = {e.step: e.loss for e in of(reference, StepEvent)}
    assert [e.step for e in of(resumed, StepEvent)] == [6, 7, 8]
    assert {e.step: e.loss for e in of(resumed, StepEvent)} == {s: expected[s] for s in (6, 7, 8)}
    assert of(resumed, DoneEvent)[0].params_sha256 == of(reference, DoneEvent)[0].params_sha256
    assert of(resumed, EvalEvent)[0].step == 6


@needs_mpirun
def test_two_ranks_equal_one_process_on_the_union_of_their_batches(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir(), one.mkdir()
    flags = ["--steps", "6", "--eval_every", "0", "--checkpoint_every", "0"]
    status, lines, stderr = run_trainer(two, *flags, "--batch_size", "4", "--expect_world_size", "2", ranks=2)
    assert status == 0, stderr
    assert {e.world_size for e in of(lines, StartEvent)} == {2}
    done = of(lines, DoneEvent)
    assert len(done) == 2 and done[0].params_sha256 == done[1].params_sha256  # identical parameters on both ranks
    rank0, rank1 = of(lines, StepEvent, 0), of(lines, StepEvent, 1)
    assert [e.loss_mean for e in rank0] == [e.loss_mean for e in rank1]
    assert all(e0.loss != e1.loss for e0, e1 in zip(rank0, rank1))  # each rank saw its own batch
    for e0, e1 in zip(rank0, rank1):
        assert e0.loss_mean == pytest.approx((e0.loss + e1.loss) / 2, abs=1e-6)

    status, single, stderr = run_trainer(one, *flags, "--batch_size", "8")
    assert status == 0, stderr
    for mine, theirs in zip(of(single, StepEvent), rank0):
        assert mine.loss == pytest.approx(theirs.loss_mean, abs=1e-5)
    import mlx.core as mx

    distributed, reference = final_weights(two / "checkpoints"), final_weights(one / "checkpoints")
    assert distributed.keys() == reference.keys()
    worst = max(mx.abs(distributed[k] - reference[k]).max().item() for k in reference)
    assert worst <= 1e-5


def test_expected_world_without_mpi_is_a_clear_error(tmp_path):
    status, lines, stderr = run_trainer(tmp_path, "--steps", "1", "--expect_world_size", "2")
    assert status == 1, stderr
    errors = of(lines, ErrorEvent)
    assert len(errors) == 1
    assert errors[0].message.startswith("MLX found no MPI: this process is rank 0 of 1 but expect_world_size is 2")
    assert "mpirun -np 2" in errors[0].message and errors[0].traceback


def test_malformed_data_is_an_error_event_naming_file_and_line(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"text": "fine"}\n{"text": oops}\n')
    status, lines, stderr = run_trainer(tmp_path, "--steps", "1", "--data", str(data))
    assert status == 1, stderr
    assert of(lines, ErrorEvent)[0].message.startswith(f"{data}:2: not valid JSON")


def test_bad_flag_is_an_error_event(tmp_path):
    status, lines, _ = run_trainer(tmp_path, "--bach_size", "3")
    assert status == 2
    assert "unrecognized arguments: --bach_size 3" in of(lines, ErrorEvent)[0].message


def test_plan_estimate_covers_the_measured_peak(uninterrupted):
    from trainer.config import TrainConfig
    from trainer.plan import PROCESS_OVERHEAD_BYTES, dataset_bytes, estimate_memory

    _, status, lines, _ = uninterrupted
    config = TrainConfig(**of(lines, StartEvent)[0].config)
    estimate = estimate_memory(config, dataset_bytes(config.data))
    peak = max(e.mlx_peak_bytes for e in of(lines, StepEvent))
    mlx_part = estimate.total_bytes - PROCESS_OVERHEAD_BYTES
    assert peak <= mlx_part, json.dumps(estimate.as_dict())
    assert mlx_part <= 3 * peak, json.dumps(estimate.as_dict())  # not wildly pessimistic either


@needs_mpirun
def test_two_rank_resume_continues_exactly(tmp_path):
    # Rank 0 reads the checkpoint and shares it with an all_sum: every rank must pair the same arrays.
    (tmp_path / "whole").mkdir()
    flags = ["--batch_size", "2", "--checkpoint_every", "3", "--expect_world_size", "2"]
    status, reference, stderr = run_trainer(tmp_path / "whole", "--steps", "6", *flags, ranks=2)
    assert status == 0, stderr
    for later in (tmp_path / "whole" / "checkpoints").glob("step_*"):
        if later.name != "step_000003":
            shutil.rmtree(later)
    status, resumed, stderr = run_trainer(tmp_path / "whole", "--steps", "6", *flags, "--resume", "checkpoints",
                                          "--checkpoint_dir", "resumed", ranks=2)
    assert status == 0, stderr
    for rank in (0, 1):
        expected = {e.step: e.loss for e in of(reference, StepEvent, rank) if e.step > 3}
        assert {e.step: e.loss for e in of(resumed, StepEvent, rank)} == expected
    hashes = {e.params_sha256 for e in of(resumed, DoneEvent)} | {e.params_sha256 for e in of(reference, DoneEvent)}
    assert len(hashes) == 1
