"""Samples decoded ahead of the method: a bounded look-ahead over a few threads, in order.

Threads, not processes: image decoding (Pillow) and hashing release the GIL, and a sample
handed across threads costs nothing, where a process would pickle every image twice.
"""
from __future__ import annotations

import itertools
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence


def prefetch(load: Callable[[str], Any], ids: Sequence[str], threads: int, ahead: int,
             busy: dict[str, float] | None = None) -> Iterator[Any]:
    """``load(id)`` for every id, in order, with up to ``ahead`` loads running or done ahead.

    Parameters
    ----------
    load : callable
        Gives the sample of one id; an exception it raises comes out where that sample would.
    ids : sequence of str
    threads : int
        Loader threads; 0 loads each sample when it is asked for (no threads).
    ahead : int
        The most samples loaded and not yet consumed (memory stays flat).
    busy : dict, optional
        ``busy["load_s"]`` accumulates the seconds spent loading.
    """
    def timed(sample_id: str) -> Any:
        t0 = time.perf_counter()
        try:
            return load(sample_id)
        finally:
            if busy is not None:
                busy["load_s"] = busy.get("load_s", 0.0) + time.perf_counter() - t0

    if threads <= 0:
        for sample_id in ids:
            yield timed(sample_id)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="harness-loader")
    source = iter(ids)
    queued: deque[Future] = deque(pool.submit(timed, i) for i in itertools.islice(source, max(1, ahead)))
    try:
        while queued:
            sample = queued.popleft().result()
            following = next(source, None)
            if following is not None:  # keep the look-ahead full
                queued.append(pool.submit(timed, following))
            yield sample
    finally:
        for future in queued:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
