"""LoRA runs on 2 test nodes without internet: mlx-lm from pushed wheels, the model copied, adapters back, resume.

The node venvs get mlx-lm the way a user's would: `mlx-lm` in a requirements file and `corral env --wheels push
--requirements FILE` (the wheels, ~60 MB with transformers, come from the shared test wheel cache after the first
run). The model is tests/lora_fixtures.py's tiny Llama, outside the project, so corral has to copy it.

Time: MLX on Linux compiles the LoRA step's CPU kernels with the system compiler on first use, into /tmp/mlx,
which is private to each test node: ~70 s on this shared 2-core machine, more than the rest of a run. The
module keeps those compiled kernels in /var/tmp (like the wheel cache) and seeds the nodes with them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

from tests.conftest import _skip_unless_clusters_can_be_built
from tests.integration.train_helpers import WHEEL_CACHE, events, leftover_processes, prepare_cluster, run_id_of
from tests.testbed.cluster import TestCluster

pytestmark = pytest.mark.integration

MLX_KERNEL_CACHE = Path(os.environ.get("CORRAL_TEST_MLX_KERNEL_CACHE", "/var/tmp/corral-test-mlx-kernels"))

MLX_LM_REQUIREMENTS = "mlx-lm==0.32.2\n"
LORA_CONFIG = """\
kind = "lora"
model = "{model}"
data = "data"
num_layers = 2
lora_rank = 8
lora_scale = 20.0
learning_rate = 2e-3
iters = 30
batch_size = 4
max_seq_length = 64
steps_per_eval = 10
val_batches = 2
save_every = 10
node_every_s = 1.0
"""


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """2 nodes with keys, a synced project holding the data and lora.toml, venvs first without mlx-lm, then with it.

    Yields (cluster, corral, project, model, the failed launch before mlx-lm was installed).
    """
    from tests.lora_fixtures import make_lora_dataset, make_tiny_llama

    _skip_unless_clusters_can_be_built()
    base = tmp_path_factory.mktemp("lora")
    model = make_tiny_llama(base / "models" / "tiny-llama")
    project = base / "project"
    make_lora_dataset(project / "data")
    (project / "lora.toml").write_text(LORA_CONFIG.format(model=model))
    (project / "bad-model.toml").write_text(LORA_CONFIG.format(model="./no-such-model"))
    (base / "lora-requirements.txt").write_text(MLX_LM_REQUIREMENTS)
    with TestCluster(n=2) as cluster:
        seed_kernel_cache(cluster)
        corral = prepare_cluster(cluster, base / "home", project)
        without_mlx_lm = corral.run("train", "--config", str(project / "lora.toml"), timeout=120)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CORRAL_WHEELHOUSE", str(WHEEL_CACHE))
            env = corral.run("env", "--wheels", "push", "--requirements", str(base / "lora-requirements.txt"),
                             timeout=900)
        assert env.returncode == 0, env.stdout + env.stderr
        yield cluster, corral, project, model, without_mlx_lm
        keep_kernel_cache(cluster)


def seed_kernel_cache(cluster) -> None:
    """Each node's /tmp/mlx from the kept kernels (owned by the node's user, who adds to it)."""
    if not MLX_KERNEL_CACHE.is_dir():
        return
    for node in cluster.nodes:
        target = node.node_dir / "tmp" / "mlx"
        shutil.copytree(MLX_KERNEL_CACHE, target, dirs_exist_ok=True)
        for path in [target, *target.rglob("*")]:
            os.chown(path, node.uid, node.gid)


def keep_kernel_cache(cluster) -> None:
    """The kernels the nodes compiled, for the next run of this module (replaced whole: no half-written file)."""
    compiled = cluster.nodes[0].node_dir / "tmp" / "mlx"
    if not compiled.is_dir():
        return
    MLX_KERNEL_CACHE.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".corral-test-mlx-kernels-", dir=MLX_KERNEL_CACHE.parent))
    shutil.copytree(compiled, fresh, dirs_exist_ok=True)
    old = MLX_KERNEL_CACHE.with_name(fresh.name + "-old")
    if MLX_KERNEL_CACHE.exists():
        os.replace(MLX_KERNEL_CACHE, old)
    os.replace(fresh, MLX_KERNEL_CACHE)
    shutil.rmtree(old, ignore_errors=True)


def rank_events(lines: list[dict], rank: int, kind: str) -> list[dict]:
    return [l["event"] for l in lines if l["rank"] == rank and l["event"] and l["event"]["event"] == kind]


def test_a_node_venv_without_mlx_lm_is_named_before_launch(lora):
    cluster, corral, _, _, result = lora
    assert result.returncode == 1
    for node in cluster.nodes:
        assert f"{node.name}: mlx-lm is not installed in its venv" in result.stderr, result.stderr
    assert "corral env --requirements FILE" in result.stderr
    # Nothing was started: no run record with a launcher.
    assert not [r for r in json.loads(corral.ok("runs", "--json").stdout) if r["state"] != "failed"]


def test_a_missing_model_fails_before_anything_starts(lora):
    cluster, corral, project, _, _ = lora
    result = corral.run("train", "--config", str(project / "bad-model.toml"))
    assert result.returncode == 1
    assert "The model path ./no-such-model does not exist on this computer" in result.stderr, result.stderr
    assert not leftover_processes(cluster)


def test_a_node_without_the_memory_the_plan_needs_is_named_before_anything_is_copied(lora, tmp_path):
    cluster, corral, project, model, _ = lora
    # A model whose weights header promises 160 GB (more than this machine, so more than either node has free);
    # the planner reads headers only, and the check comes before any copy, so the file needs no data.
    huge = tmp_path / "huge-llama"
    huge.mkdir()
    (huge / "config.json").write_bytes((model / "config.json").read_bytes())
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [1_000_000, 40_000],
                                                       "data_offsets": [0, 160_000_000_000]}}).encode()
    (huge / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    config = project / "huge.toml"
    config.write_text(LORA_CONFIG.format(model=huge))
    result = corral.run("train", "--config", str(config))
    assert result.returncode == 1
    for node in cluster.nodes:
        assert re.search(rf"{node.name}: [\d.]+ GiB of memory free, but 1 rank of this LoRA run need about "
                         r"1\d\d\.\d GiB", result.stderr), result.stderr
    assert not [path for node in cluster.nodes for path in (node.home_on_host / "corral" / "models").glob("huge-*")]


def test_lora_run_on_two_nodes_brings_adapters_back(lora):
    cluster, corral, project, model, _ = lora
    result = corral.run("train", "--config", str(project / "lora.toml"), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    assert f"Run {run_id}: finished, step 30" in result.stdout, result.stdout
    # The model went to every node once, in the models folder of its own home, with progress per node.
    for node in cluster.nodes:
        assert f"{node.name}: model tiny-llama-" in result.stderr and "copied" in result.stderr
        copies = list((node.home_on_host / "corral" / "models").glob("tiny-llama-*/model.safetensors"))
        assert len(copies) == 1, node.name
    lines = events(corral, run_id)
    for rank in range(2):
        steps = rank_events(lines, rank, "step")
        assert [e["step"] for e in steps] == list(range(1, 31)), rank
        assert sum(e["loss"] for e in steps[-5:]) / 5 < sum(e["loss"] for e in steps[:5]) / 5, rank  # the loss falls
    # Adapters: written by rank 0 on the head, copied back under the run's record, and loadable by mlx-lm.
    local = corral.home / "runs" / run_id / "adapters"
    assert f"Adapters: {local}" in result.stdout
    assert (local / "adapters.safetensors").is_file() and (local / "adapter_config.json").is_file()
    assert not list(local.parent.glob(".adapters-*"))  # the temporary copy was renamed into place
    runs = json.loads(corral.ok("runs", "--json").stdout)
    assert runs[0]["id"] == run_id and runs[0]["adapters_path"] == str(local)
    assert str(local) in corral.ok("runs").stdout
    from mlx_lm import load

    loaded, _ = load(str(model), adapter_path=str(local))
    assert any("lora" in kind for _, kind in _named_modules(loaded))  # LoRALinear layers carry the adapters
    # `corral adapters RUN` copies them again from the head (e.g. after the local copy was deleted).
    shutil.rmtree(local)
    fetched = corral.ok("adapters", run_id)
    assert f"Adapters of run {run_id}: {local}" in fetched.stdout
    assert (local / "adapters.safetensors").is_file()


def _named_modules(model):
    return [(name, type(module).__name__.lower()) for name, module in model.named_modules()]


def test_resume_continues_from_the_saved_adapters(lora):
    cluster, corral, project, _, _ = lora
    first = json.loads(corral.ok("runs", "--json").stdout)[0]["id"]
    result = corral.run("train", "--resume", first, "--set", "iters=40", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    # Already on the nodes: the model is not copied again; the earlier adapters went to every node.
    assert "copying" not in result.stderr.replace("copying run", "").replace("copying corral's", "")
    for node in cluster.nodes:
        assert (node.home_on_host / "corral" / "runs" / run_id / "resume" / "adapters.safetensors").is_file()
    lines = events(corral, run_id)
    steps = rank_events(lines, 0, "step")
    first_losses = [e["loss"] for e in rank_events(events(corral, first), 0, "step")]
    assert steps and steps[0]["step"] > 1  # the step count continues from the earlier run's adapters
    assert steps[0]["loss"] < first_losses[0]  # and so does the learning
    assert (corral.home / "runs" / run_id / "adapters" / "adapters.safetensors").is_file()
    assert os.path.isdir(corral.home / "runs" / first / "adapters")


def test_a_second_run_finds_the_model_on_the_nodes(lora):
    cluster, corral, project, _, _ = lora
    result = corral.run("train", "--config", str(project / "lora.toml"), "--set", "iters=2", "--set",
                        "steps_per_eval=0", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for node in cluster.nodes:
        assert re.search(rf"{node.name}: model tiny-llama-\w+: present", result.stderr), result.stderr
    assert "copying" not in result.stderr.replace("copying corral's", "")
    assert not leftover_processes(cluster)
