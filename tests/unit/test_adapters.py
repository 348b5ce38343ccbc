"""Adapters back to this computer: a local run's folder copied under the run's record, replaced whole, once."""

from __future__ import annotations

import asyncio

import pytest

from cluster.adapters import fetch_adapters, fetch_adapters_when_over, local_adapters_dir
from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.local_host import local_base_dir
from cluster.runs import RunRecord, load_record, save_record


def record(run_id: str = "20261121-120000-abcd", kind: str | None = "lora") -> RunRecord:
    return RunRecord(id=run_id, created=1.0, nodes=("local",), head="local", world_size=2, backend="mpi",
                     program=("-X", f"corral-run={run_id}", "-m", "trainer"), remote_run_dir=f"corral/runs/{run_id}",
                     local=True, kind=kind, adapter_dir="adapters", state="finished")


def written(home: CorralHome, run: RunRecord, content: bytes) -> None:
    folder = local_base_dir(home) / run.remote_run_dir / "adapters"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapters.safetensors").write_bytes(content)
    (folder / "adapter_config.json").write_text("{}")


def test_a_finished_local_run_gets_its_adapters_once_and_a_refetch_replaces_them(tmp_path):
    home = CorralHome(tmp_path / "home")
    run = record()
    save_record(home, run)
    written(home, run, b"first")
    path = asyncio.run(fetch_adapters_when_over(home, run.id, over=True))
    assert path == local_adapters_dir(home, run.id) and (path / "adapters.safetensors").read_bytes() == b"first"
    assert load_record(home, run.id).adapters_path == str(path)
    written(home, run, b"second")
    assert asyncio.run(fetch_adapters_when_over(home, run.id, over=True)) == path  # copied already: left as it is
    assert (path / "adapters.safetensors").read_bytes() == b"first"
    asyncio.run(fetch_adapters(home, run.id))  # explicitly: the new folder replaces the old one whole
    assert (path / "adapters.safetensors").read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["adapters", "run.json"]  # no temporary folder left


def test_nothing_is_copied_for_a_running_or_scratch_run_or_one_without_adapters(tmp_path):
    home = CorralHome(tmp_path / "home")
    scratch, lora = record("a", kind=None), record("b")
    save_record(home, scratch)
    save_record(home, lora)
    assert asyncio.run(fetch_adapters_when_over(home, lora.id, over=False)) is None
    assert asyncio.run(fetch_adapters_when_over(home, scratch.id, over=True)) is None
    assert asyncio.run(fetch_adapters_when_over(home, lora.id, over=True)) is None  # logged, not raised
    with pytest.raises(ClusterError, match="has no adapters folder"):
        asyncio.run(fetch_adapters(home, lora.id))
    assert not local_adapters_dir(home, lora.id).exists()
