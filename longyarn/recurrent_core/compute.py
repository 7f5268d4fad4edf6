"""One thread for longyarn's tensor work: the local model and the embedder run on it.

PyTorch parallelises CPU work with OpenMP, which keeps a team of threads for each thread that
uses it. Once a second thread has had a team, work on either runs about 1.5x slower on a
2-core machine (measured with a 0.1B-shaped RWKV-7: decode 18 -> 30 ms a token, prefill of
256 tokens 380 -> 540 ms), even while the other team is idle. So every computation goes to
this one thread and callers wait for it; the model already ran one request at a time, and
the embedder batches callers that arrive together.

    result = run_on_compute_thread(function, *args)   # blocks the calling thread
    future = submit_to_compute_thread(function)        # a concurrent.futures.Future

Work submitted from the compute thread itself runs at once (no deadlock).

Short work can jump the queue: `urgent=True` work also runs between the tokens of a long
generation (which calls `run_urgent_work()` at each one), so embedding a search query does
not wait for a whole paragraph to be written.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

THREAD_NAME = "longyarn-compute"

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_urgent: queue.SimpleQueue[tuple[concurrent.futures.Future, Callable[..., Any], tuple]] = queue.SimpleQueue()


def _compute_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        return _executor


def on_compute_thread() -> bool:
    """Whether the calling thread is the compute thread."""
    return threading.current_thread().name.startswith(THREAD_NAME)


def submit_to_compute_thread(
    function: Callable[..., T], *args: Any, urgent: bool = False
) -> concurrent.futures.Future[T]:
    """Queue `function(*args)` on the compute thread: after what is queued already, or, with
    `urgent`, at the next `run_urgent_work()` of the work under way (if any)."""
    if on_compute_thread():
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        _run_into(future, function, args)
        return future
    if not urgent:
        return _compute_executor().submit(function, *args)
    future = concurrent.futures.Future()
    _urgent.put((future, function, args))
    _compute_executor().submit(run_urgent_work)  # runs it at once if the thread is idle
    return future


def run_on_compute_thread(function: Callable[..., T], *args: Any, urgent: bool = False) -> T:
    """`function(*args)`, run on the compute thread; the calling thread waits for the result."""
    if on_compute_thread():
        return function(*args)
    return submit_to_compute_thread(function, *args, urgent=urgent).result()


def run_urgent_work() -> None:
    """Run the urgent work waiting, if any; long work on the compute thread calls this often."""
    while True:
        try:
            future, function, args = _urgent.get_nowait()
        except queue.Empty:
            return
        if future.set_running_or_notify_cancel():
            _run_into(future, function, args)


def _run_into(future: concurrent.futures.Future, function: Callable[..., Any], args: tuple) -> None:
    try:
        future.set_result(function(*args))
    except BaseException as error:
        future.set_exception(error)


__all__ = ["on_compute_thread", "run_on_compute_thread", "run_urgent_work", "submit_to_compute_thread"]
