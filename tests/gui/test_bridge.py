"""The asyncio worker thread and its Qt bridge: results, errors and batched progress in the GUI thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cluster.errors import NodeUnreachable


def test_result_and_progress_arrive_in_the_gui_thread(qtbot, bridge):
    gui_thread = threading.current_thread()
    seen_threads = []
    batches = []

    async def work(report):
        for i in range(100):
            report(i)
        await asyncio.sleep(0.01)
        return "done"

    job = bridge.start(work)
    job.progressed.connect(lambda batch: (batches.append(batch), seen_threads.append(threading.current_thread())))
    with qtbot.waitSignal(job.succeeded, timeout=5000) as done:
        pass
    assert done.args == ["done"]
    assert [i for batch in batches for i in batch] == list(range(100))
    assert len(batches) < 100  # batched, not one signal per event
    assert set(seen_threads) == {gui_thread}


def test_errors_arrive_as_failed(qtbot, bridge):
    async def work(report):
        raise NodeUnreachable("node2", "node2 refused the connection")

    job = bridge.start(work)
    with qtbot.waitSignal(job.failed, timeout=5000) as failed:
        pass
    assert isinstance(failed.args[0], NodeUnreachable)


def test_cancel_stops_the_coroutine(qtbot, bridge):
    started = threading.Event()

    async def work(report):
        started.set()
        await asyncio.sleep(30)

    job = bridge.start(work)
    assert started.wait(5)
    with qtbot.waitSignal(job.failed, timeout=5000) as failed:
        job.cancel()
    assert isinstance(failed.args[0], asyncio.CancelledError)
    assert not job.running


def test_cycles_are_collected_in_the_gui_thread_only_while_a_worker_runs(qtbot, qapp):
    # A widget collected in the worker thread deadlocked a test run (its destructor waits for the GIL).
    import gc

    from gui.bridge import AsyncWorker, Bridge

    worker = AsyncWorker()
    Bridge(worker)
    assert not gc.isenabled()  # automatic collection (in any thread) is off

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    collected_in = []
    gc.callbacks.append(lambda phase, info: collected_in.append(threading.current_thread()) if phase == "stop" else None)
    try:
        for _ in range(50_000):
            Cycle()
        qtbot.waitUntil(lambda: bool(collected_in), timeout=5000)  # the GUI-thread timer collected them
        assert set(collected_in) == {threading.main_thread()}
    finally:
        gc.callbacks.pop()
        worker.stop()
    assert gc.isenabled() == (not _other_workers_hold_gc())


def _other_workers_hold_gc() -> bool:
    from gui.bridge import _gui_thread_gc

    return _gui_thread_gc._users > 0
