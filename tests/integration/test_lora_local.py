"""`kind = "lora"` for real on this machine: mlx-lm LoRA under `mpirun -np 2` on the tiny Llama, adapters, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.mpi_output import TagReassembler
from trainer.events import CheckpointEvent, DoneEvent, ErrorEvent, EvalEvent, RawLine, StartEvent, StepEvent, parse_line

pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install -e '.[test]')")

from tests.lora_fixtures import make_lora_dataset, make_tiny_llama  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)")
ITERS = 30
CONFIG = f"""kind = "lora"
model = "model"
data = "data"
num_layers = -1
lora_rank = 8
learning_rate = 1e-3
iters = {ITERS}
batch_size = 4
max_seq_length = 64
steps_per_eval = 10
val_batches = 2
save_every = 10
node_every_s = 0
"""


def run_lora(workdir: Path, *flags: str, ranks: int = 1, config: Path | None = None,
             rank_dirs: list[Path] | None = None) -> tuple[int, list, str]:
    """`python -m trainer --config lora.toml` (under mpirun when ranks > 1) in workdir: (status, parsed lines, stderr).

    ``rank_dirs``: one working directory per rank instead (mpirun's colon syntax, one app context per rank).
    """
    argv = [sys.executable, "-m", "trainer", "--config", str(config or workdir.parent / "lora.toml"), *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if ranks == 1 and not rank_dirs:
        result = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env, timeout=180)
        return result.returncode, [parse_line(line) for line in result.stdout.splitlines()], result.stderr
    # mpirun forwards chunks, not lines: two ranks' lines can interleave mid-line. With --tag-output, corral's
    # own reassembler gets each rank's lines back whole, as `corral train` does.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    ranks = len(rank_dirs) if rank_dirs else ranks
    argv = [*argv, "--expect_world_size", str(ranks)]
    contexts = [["-np", "1", "-wdir", str(d), *argv] for d in rank_dirs] if rank_dirs else [["-np", str(ranks), *argv]]
    mpirun = ["mpirun", "--oversubscribe", "--tag-output"]
    for index, context in enumerate(contexts):
        mpirun += ([":"] if index else []) + context
    result = subprocess.run(mpirun, cwd=workdir, capture_output=True, text=True, env=env, timeout=180)
    reassembler = TagReassembler()
    lines = reassembler.feed(result.stdout) + reassembler.flush()
    stdout = [line.text for line in lines if line.stream == "stdout"]
    stderr = "\n".join(line.text for line in lines if line.stream != "stdout") + result.stderr
    return result.returncode, [parse_line(text) for text in stdout], stderr


def of(lines: list, kind: type, rank: int | None = None) -> list:
    return [e for e in lines if isinstance(e, kind) and (rank is None or e.rank == rank)]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, the data and lora.toml side by side (model and data are relative to the config file)."""
    root = tmp_path_factory.mktemp("lora")
    make_tiny_llama(root / "model")
    make_lora_dataset(root / "data")
    (root / "lora.toml").write_text(CONFIG)
    return root


@pytest.fixture(scope="module")
def two_ranks(project: Path) -> tuple[Path, int, list, str]:
    """One 30-step run on 2 ranks, shared by the tests that read its events and adapters."""
    workdir = project / "run1"
    workdir.mkdir()
    return (workdir, *run_lora(workdir, ranks=2))


@needs_mpirun
def test_two_ranks_train_their_own_shards_and_the_loss_falls(two_ranks):
    workdir, status, lines, stderr = two_ranks
    assert status == 0, stderr
    assert not of(lines, RawLine), "stdout carries only events (mlx-lm's own table goes to stderr)"
    assert "train_loss" in stderr and "\x1b[" not in stderr, "mlx-lm's table, without terminal colour codes"
    starts = of(lines, StartEvent)
    assert sorted(e.rank for e in starts) == [0, 1] and {e.world_size for e in starts} == {2}
    assert starts[0].config["kind"] == "lora" and starts[0].config["trainable_parameters"] > 0
    steps = {rank: of(lines, StepEvent, rank) for rank in (0, 1)}
    assert [e.step for e in steps[0]] == [e.step for e in steps[1]] == list(range(1, ITERS + 1))
    for mine, theirs in zip(steps[0], steps[1]):
        # Each rank reports the loss on its own half of the batch; the mean is the same everywhere.
        assert mine.loss_mean == pytest.approx(theirs.loss_mean, abs=1e-6)
        assert mine.loss_mean == pytest.approx((mine.loss + theirs.loss) / 2, rel=1e-5)
        assert mine.tokens_per_s > 0 and mine.step_time_s > 0
        assert mine.mlx_peak_bytes >= mine.mlx_active_bytes > 0 and mine.rss_bytes > 0
    assert sum(a.loss != b.loss for a, b in zip(steps[0], steps[1])) > ITERS // 2, "the ranks see different shards"
    first, last = steps[0][0].loss_mean, sum(e.loss_mean for e in steps[0][-5:]) / 5
    assert first > 5.5 and last < first - 2.0, f"loss {first:.2f} -> {last:.2f}"
    assert steps[0][-1].tokens == pytest.approx(sum(e.tokens_per_s * e.step_time_s for e in steps[0]))
    evals = of(lines, EvalEvent, 0)
    assert [e.step for e in evals] == [0, 9, 19, 29] and evals[-1].val_loss < evals[0].val_loss - 2.0
    done = of(lines, DoneEvent)
    assert len(done) == 2 and done[0].step == ITERS and done[0].params_sha256 == done[1].params_sha256


@needs_mpirun
def test_the_memory_plan_covers_what_a_rank_used(two_ranks, project):
    from trainer.config import parse_any_args
    from trainer.lora.plan import estimate_lora

    workdir, status, lines, stderr = two_ranks
    assert status == 0, stderr
    settings = parse_any_args(["--config", str(project / "lora.toml")]).config
    estimate = estimate_lora(project / "model", settings, world_size=2)
    steps = of(lines, StepEvent)
    assert estimate.total_bytes >= max(e.rss_bytes for e in steps)
    assert estimate.total_bytes - estimate.overhead_bytes >= 0.8 * max(e.mlx_peak_bytes for e in steps)


@needs_mpirun
def test_rank_zero_saves_adapters_atomically_in_mlx_lm_layout(two_ranks):
    import mlx.core as mx

    workdir, status, lines, stderr = two_ranks
    assert status == 0, stderr
    checkpoints = of(lines, CheckpointEvent)
    assert [(e.rank, e.step) for e in checkpoints] == [(0, 10), (0, 20), (0, 30)]
    assert {e.path for e in checkpoints} == {"adapters/adapters.safetensors"}
    adapters = workdir / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == [
        "0000010_adapters.safetensors", "0000020_adapters.safetensors", "0000030_adapters.safetensors",
        "adapter_config.json", "adapters.safetensors",
    ]
    final, metadata = mx.load(str(adapters / "adapters.safetensors"), return_metadata=True)
    assert metadata["corral_step"] == "30" and checkpoints[-1].size_bytes == (adapters / "adapters.safetensors").stat().st_size
    numbered = mx.load(str(adapters / "0000030_adapters.safetensors"))
    assert all(mx.array_equal(final[name], numbered[name]).item() for name in final)
    assert not mx.array_equal(final[next(iter(final))], mx.load(str(adapters / "0000010_adapters.safetensors"))[next(iter(final))]).item()
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["lora_parameters"] == {"rank": 8, "scale": 20.0, "dropout": 0.0} and config["num_layers"] == -1


@needs_mpirun
def test_mlx_lm_loads_the_adapters_and_generates(two_ranks, project):
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    workdir, status, _, stderr = two_ranks
    assert status == 0, stderr
    model, tokenizer = mlx_lm.load(str(project / "model"), adapter_path=str(workdir / "adapters"))
    loaded = {n: v for n, v in tree_flatten(model.parameters()) if n.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}
    saved = mx.load(str(workdir / "adapters" / "adapters.safetensors"))
    assert set(loaded) == set(saved) and all(mx.array_equal(loaded[n], saved[n]).item() for n in saved)
    text = mlx_lm.generate(model, tokenizer, prompt="alice buys", max_tokens=6)
    assert text.strip(), "the fine-tuned model generates text"


@needs_mpirun
def test_resume_continues_the_step_count_and_changes_the_adapters(two_ranks, project, tmp_path):
    import mlx.core as mx

    workdir, status, first_run, stderr = two_ranks
    assert status == 0, stderr
    before = mx.load(str(workdir / "adapters" / "adapters.safetensors"))
    # Only rank 0's working directory holds the file (as only the head node holds the earlier run's adapters).
    head, other = tmp_path / "head", tmp_path / "other"
    (head / "earlier").mkdir(parents=True)
    other.mkdir()
    shutil.copy(workdir / "adapters" / "adapters.safetensors", head / "earlier" / "adapters.safetensors")
    status, lines, stderr = run_lora(tmp_path, "--resume_adapter_file", "earlier/adapters.safetensors", "--iters", "40",
                                     config=project / "lora.toml", rank_dirs=[head, other])
    assert status == 0, stderr
    assert not (other / "adapters").exists(), "only rank 0 writes adapters"
    steps = of(lines, StepEvent, 0)
    assert [e.step for e in steps] == list(range(31, 41))
    assert of(lines, StartEvent, 0)[0].config["first_step"] == 30
    # The adapters were loaded: the first resumed step is near where the first run ended, far below a fresh start.
    assert steps[0].loss_mean < of(first_run, StepEvent, 0)[0].loss_mean - 2.0
    assert [e.step for e in of(lines, CheckpointEvent)] == [40]
    after, metadata = mx.load(str(head / "adapters" / "adapters.safetensors"), return_metadata=True)
    assert metadata["corral_step"] == "40"
    assert any(not mx.array_equal(before[name], after[name]).item() for name in before)
    assert (head / "adapters" / "0000040_adapters.safetensors").is_file()
    done = of(lines, DoneEvent)
    assert len(done) == 2 and done[0].params_sha256 == done[1].params_sha256, "rank 1 received the adapters"


ERROR_CASES = [
    ("missing_model", ["--model", "/nowhere/model"], "model /nowhere/model is not a directory on"),
    ("bad_line", [], "data/train.jsonl:3: not valid JSON"),
    ("no_mpi", ["--expect_world_size", "2"], "MLX found no MPI"),
    ("too_many_layers", ["--num_layers", "5"], "num_layers is 5 but the model has 2 blocks"),
    ("nothing_left", ["--resume_adapter_file", "{resume}", "--iters", "30"], "is at step 30 and iters is 30"),
    ("bad_resume", ["--resume_adapter_file", "{resume}", "--lora_rank", "4"], "does not fit this model and LoRA settings"),
]


@pytest.fixture(scope="module")
def failed_runs(project: Path, two_ranks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen]]:
    """Every error case started at once (each spends its few seconds importing mlx-lm); a test waits for its own."""
    resume = two_ranks[0] / "adapters" / "adapters.safetensors"
    started = {}
    for case, flags, _ in ERROR_CASES:
        workdir = tmp_path_factory.mktemp(case)
        config = project / "lora.toml"
        if case == "bad_line":
            data = make_lora_dataset(workdir / "data")
            lines = (data / "train.jsonl").read_text().splitlines()
            lines[2] = lines[2][:-1]  # drop the closing brace
            (data / "train.jsonl").write_text("\n".join(lines) + "\n")
            config = workdir / "lora.toml"
            config.write_text(CONFIG.replace('model = "model"', f'model = "{project / "model"}"'))
        argv = [sys.executable, "-m", "trainer", "--config", str(config), *(f.format(resume=resume) for f in flags)]
        started[case] = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize(("case", "message"), [(c[0], c[2]) for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_failures_are_one_error_event_and_a_non_zero_exit(failed_runs, case, message):
    stdout, stderr = failed_runs[case].communicate(timeout=180)
    assert failed_runs[case].returncode != 0
    lines = [parse_line(line) for line in stdout.splitlines()]
    errors = of(lines, ErrorEvent)
    assert len(errors) == 1 and message in errors[0].message, (lines, stderr)
    assert not of(lines, StepEvent)
