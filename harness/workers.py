"""A pool of worker processes for the per-image CPU work of a run, with results in order.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: its workers inherit SIGINT (Ctrl-C
prints one traceback per worker), nothing stops them when the parent is killed (they keep
waiting on a queue whose write end they hold themselves), and it cannot bound the work in
flight. This pool:

- forks its workers (Linux, macOS) when it is created, so they inherit the run's plugins as
  built, and caps every numeric library to one thread in each (the pool is the parallelism);
- keeps at most ``max_in_flight`` tasks submitted and not yet collected, so memory stays flat;
- gives results back in submission order (:meth:`WorkerPool.map_ordered`);
- turns a worker's exception into the same :class:`~harness.errors.HarnessError` class in the
  parent, with the worker's traceback as the cause's text (shown with ``-v``);
- on Ctrl-C or any error in the parent, terminates every worker (SIGTERM, then SIGKILL after
  :data:`STOP_GRACE_S`); a worker whose parent died (``kill -9``) exits by itself: Linux's
  parent-death signal, and everywhere a check of the parent's pid every :data:`POLL_S`.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import time
import traceback
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from harness.errors import HarnessError, PluginError

#: Seconds between a waiting worker's checks that its parent is still alive.
POLL_S = 0.25
#: How much lower the workers' scheduling priority is than the main process's.
WORKER_NICENESS = 5
#: Seconds a worker gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 0.5
#: Seconds an interrupted run waits for the workers to finish the images they hold (Ctrl-C
#: stops every worker within a second).
DRAIN_S = 0.4
#: Seconds the workers get to start (a worker that hangs at start stops the run with an error).
START_TIMEOUT_S = 60.0
READY = -1
_PR_SET_PDEATHSIG = 1


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def limit_threads(threads: int = 1) -> None:
    """Cap the thread pools of the numeric libraries already imported in this process."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules and sys.modules["cv2"].getNumThreads() != threads:
        sys.modules["cv2"].setNumThreads(threads)  # a forked worker inherits 1 (see _opencv_pool_stopped)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # BLAS under numpy and scipy (OpenBLAS reads its variable only at load)


@contextmanager
def _opencv_pool_stopped():
    """OpenCV's thread pool stopped (one thread) while workers fork, restored after: a forked
    child that tears down a pool inherited mid-use hangs in ``pthread_cond_destroy``."""
    cv2 = sys.modules.get("cv2")
    before = cv2.getNumThreads() if cv2 is not None else None
    if cv2 is not None:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if cv2 is not None:
            cv2.setNumThreads(before)


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # the pid check in the loop still applies


def _worker_main(work: Callable[[Any], Any], tasks, results, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    limit_threads(1)
    try:  # the main process's device stage bounds most runs: it wins the cores when they are short
        os.nice(WORKER_NICENESS)
    except (AttributeError, OSError):
        pass
    results.put((READY, True, os.getpid()))
    while True:
        try:
            task = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if task is None:
            return
        index, payload = task
        try:
            results.put((index, True, work(payload)))
        except BaseException as exc:  # sent back whole: the parent raises it
            results.put((index, False, _describe(exc)))


def _describe(exc: BaseException) -> tuple[str, str, str]:
    kind = "plugin" if isinstance(exc, PluginError) else ("harness" if isinstance(exc, HarnessError) else "other")
    message = str(exc) if kind != "other" else f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc
    return kind, message, "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))


class WorkerError(Exception):
    """The traceback of an exception raised in a worker process (the cause of what the parent raises)."""


def _raise(description: tuple[str, str, str]) -> None:
    kind, message, trace = description
    cause = WorkerError("in a worker process:\n" + trace)
    if kind == "plugin":
        raise PluginError(message) from cause
    if kind == "harness":
        raise HarnessError(message) from cause
    raise HarnessError(f"a worker process failed: {message} (run again with -v for the traceback)") from cause


class WorkerPool:
    """``processes`` forked workers that apply ``work`` to payloads (see the module docstring).

    Parameters
    ----------
    work : callable
        Applied in a worker to each payload; its result (picklable) comes back to the parent.
        Forked workers inherit it with everything it refers to, as it was at construction.
    processes : int
        How many workers (at least 1).
    max_in_flight : int, optional
        The most payloads submitted and not yet collected (default ``4 * processes``).
    """

    def __init__(self, work: Callable[[Any], Any], processes: int, max_in_flight: int | None = None):
        if processes < 1:
            raise ValueError("a pool needs at least one process")
        if not can_fork():
            raise HarnessError("--workers needs the 'fork' start method, which this platform lacks; "
                               "use --workers 0")
        ctx = multiprocessing.get_context("fork")
        self.max_in_flight = max_in_flight or 4 * processes
        self._tasks = ctx.Queue(self.max_in_flight)
        self._results = ctx.Queue()
        self._procs = [ctx.Process(target=_worker_main, args=(work, self._tasks, self._results, os.getpid()),
                                   daemon=True, name=f"harness-worker-{i}") for i in range(processes)]
        with _opencv_pool_stopped():
            for proc in self._procs:
                proc.start()
        self.closed = False
        self._outstanding = 0  # tasks submitted whose result has not come back
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Wait for every worker's first message: a hang at start (a lock a parent thread held
        at fork) is an error naming the fix, never a run that waits for ever."""
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = 0
        while ready < len(self._procs):
            try:
                index, _, _ = self._results.get(timeout=max(0.01, min(POLL_S, deadline - time.monotonic())))
                ready += index == READY
                continue
            except queue.Empty:
                pass
            dead = [p for p in self._procs if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                self.terminate()
                raise HarnessError(f"the worker processes did not start ({len(self._procs) - ready} of "
                                   f"{len(self._procs)} silent after {START_TIMEOUT_S:.0f} s); run with --workers 0")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def map_ordered(self, payloads: Iterable[Any]) -> Iterator[Any]:
        """Results of ``work(payload)``, in the order of ``payloads``, consuming them lazily."""
        pending: deque[int] = deque()
        done: dict[int, Any] = {}
        source = iter(payloads)
        exhausted = False
        index = 0
        while True:
            while not exhausted and len(pending) < self.max_in_flight:
                try:
                    payload = next(source)
                except StopIteration:
                    exhausted = True
                    break
                self._tasks.put((index, payload))
                self._outstanding += 1
                pending.append(index)
                index += 1
            if not pending:
                return
            while pending[0] not in done:
                self._collect(done)
            ok, value = done.pop(pending.popleft())
            if not ok:  # raised in dataset order: the error a one-process run would have stopped at
                _raise(value)
            yield value

    def _collect(self, done: dict[int, Any], timeout: float | None = None) -> bool:
        """Wait for one result (at most ``timeout`` seconds; None: until a worker dies)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                index, ok, value = self._results.get(timeout=POLL_S if deadline is None else
                                                     max(0.0, min(POLL_S, deadline - time.monotonic())))
                break
            except queue.Empty:
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    raise HarnessError(f"worker process {dead[0].name} stopped (exit status {dead[0].exitcode}); "
                                       f"a plugin may have crashed or run out of memory; run again with --workers 0 "
                                       f"to see its error")
                if deadline is not None and time.monotonic() >= deadline:
                    return False
        done[index] = (ok, value)
        self._outstanding -= 1
        return True

    def drain(self, grace: float) -> None:
        """Let the workers finish what they were given, for at most ``grace`` seconds (an
        interrupted run keeps the cache entries they write), then stop them."""
        deadline = time.monotonic() + grace
        done: dict[int, Any] = {}
        try:
            while self._outstanding > 0 and time.monotonic() < deadline:
                self._collect(done, deadline - time.monotonic())
        except HarnessError:
            pass
        finally:
            self.terminate()

    def close(self) -> None:
        """Let the workers finish and exit (after the last result was collected)."""
        if self.closed:
            return
        for _ in self._procs:
            self._tasks.put(None)
        deadline = time.monotonic() + 5
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        self.terminate()

    def terminate(self) -> None:
        """Stop every worker now: SIGTERM, then SIGKILL after :data:`STOP_GRACE_S`."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for q in (self._tasks, self._results):
            q.cancel_join_thread()  # never block the parent on a queue nobody reads any more
            q.close()
        self.closed = True

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()
