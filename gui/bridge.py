"""The one place asyncio meets Qt: an event loop in a worker thread, results and progress back as signals.

Measured here: asyncio in its own thread with results marshalled through queued Qt signals stalls the
GUI less than qasync, and every asyncssh feature works (PySide6's QtAsyncio cannot run asyncssh).
Progress events can arrive thousands of times a second (training logs), so they are queued and handed
to the GUI in batches from a timer rather than one signal each.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

log = logging.getLogger(__name__)

# How often queued progress events reach the widgets: ~30 Hz keeps charts live without flooding Qt.
PROGRESS_INTERVAL_MS = 33


class _GarbageCollectionInGuiThread:
    """While a worker thread runs Python, the cyclic garbage collector runs only in the GUI thread.

    Python collects cycles in whichever thread happens to allocate. Collected in the worker thread, a dropped
    widget's C++ destructor takes Qt's signal lock and then waits for the GIL, while the GUI thread holds the
    GIL and waits for that lock: a deadlock (seen in the GUI tests). pyqtgraph's GarbageCollector disables
    automatic collection and collects from a timer in the GUI thread instead; gc is enabled again when the
    last worker stops.
    """

    def __init__(self) -> None:
        self._users = 0
        self._collector: Any = None

    def acquire(self) -> None:
        if self._users == 0:
            from pyqtgraph.util.garbage_collector import GarbageCollector

            self._collector = GarbageCollector(interval=0.5)
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._collector is not None:
            self._collector.timer.stop()
            self._collector = None
            gc.enable()


_gui_thread_gc = _GarbageCollectionInGuiThread()


class AsyncWorker:
    """An asyncio event loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self._holds_gc = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="corral-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def collect_garbage_in_gui_thread(self) -> None:
        """Called from the GUI thread once Qt runs: from now on cycles are collected there only."""
        if not self._holds_gc:
            _gui_thread_gc.acquire()
            self._holds_gc = True

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(callback)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel what is still running, give it a moment to clean up (close SSH), then stop the loop."""
        if not self.loop.is_running():
            self._release_gc()
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout_s)
        except Exception:  # noqa: BLE001 - shutting down anyway; the log keeps the reason
            log.exception("tasks did not finish cleanly at shutdown")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()  # an unclosed loop warns whenever the garbage collector gets to it
            self._release_gc()

    def _release_gc(self) -> None:
        if self._holds_gc:
            self._holds_gc = False
            _gui_thread_gc.release()


class Job(QObject):
    """One coroutine's outcome as Qt signals, delivered in the GUI thread (queued connections)."""

    succeeded = Signal(object)
    failed = Signal(object)  # the exception
    progressed = Signal(list)  # a batch of progress events, oldest first

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._events: deque[object] = deque()
        self._lock = threading.Lock()
        self._future: Future[Any] | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(PROGRESS_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

    def report(self, event: object) -> None:
        """Called from the asyncio thread (a core ``on_progress`` callback): queue for the next batch."""
        with self._lock:
            self._events.append(event)

    @Slot()
    def _drain(self) -> None:
        with self._lock:
            batch = list(self._events)
            self._events.clear()
        if batch:
            self.progressed.emit(batch)

    def cancel(self) -> None:
        if self._future is not None:
            self._future.cancel()

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()


class Bridge(QObject):
    """Starts core coroutines on the worker loop and hands back a Job whose signals the widgets use."""

    _finished = Signal(object, object, object)  # job, result, exception: crosses from the loop thread

    def __init__(self, worker: AsyncWorker, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        worker.collect_garbage_in_gui_thread()
        self._finished.connect(self._on_finished)

    def start(self, make: Callable[[Callable[[object], None]], Awaitable[Any]], parent: QObject | None = None) -> Job:
        """``make(report)`` builds the coroutine; ``report`` is the progress callback to pass to the core."""
        job = Job(parent or self)
        job._timer.start()

        async def run() -> None:
            try:
                result = await make(job.report)
            except asyncio.CancelledError:
                self._finished.emit(job, None, asyncio.CancelledError())
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the GUI, which shows or reports it
                self._finished.emit(job, None, exc)
            else:
                self._finished.emit(job, result, None)

        job._future = self.worker.submit(run())
        return job

    @Slot(object, object, object)
    def _on_finished(self, job: Job, result: object, error: BaseException | None) -> None:
        job._drain()  # progress first, so the last events are shown before the outcome
        job._timer.stop()
        if error is None:
            job.succeeded.emit(result)
        else:
            job.failed.emit(error)
