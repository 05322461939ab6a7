"""Threads for the CPU fits: BLAS limited to one thread, and independent fits spread over the cores."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from threadpoolctl import threadpool_limits

__all__ = ["map_on_cores", "one_blas_thread"]


def one_blas_thread() -> Any:
    """A context in which numpy's and scipy's BLAS run on one thread: scikit-learn's fits on a few thousand rows x a
    few hundred features are made of small products, and after a torch pass (whose OpenMP threads stay awake) BLAS
    threads on a 2-core machine fought over the cores. Measured on 12,000 x 84 features: DFR's 41 fits took 10.9 s
    with two BLAS threads and 1.8 s with one (``benchmarks/speed.py --head_fits``)."""

    return threadpool_limits(limits=1, user_api="blas")


def map_on_cores(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(item) for item in items]``, with the items spread over the machine's cores (threads, each fit's BLAS on
    one thread): independent scikit-learn fits spend most of their time in numpy and BLAS calls that release the
    GIL, so two fits on 2 cores took 2.4 s where one after the other took 4.1 s (12,000 x 84, M' on random
    attributes). Each item's result is what ``fn`` alone gives (the same single-threaded arithmetic). ``fn`` must not
    share mutable state between items (a scikit-learn estimator instance, a process group's collectives)."""

    workers = min(len(items), os.cpu_count() or 1)
    if workers <= 1:
        return [fn(item) for item in items]
    with one_blas_thread(), ThreadPoolExecutor(max_workers=workers) as pool:  # the outer limit: threads nest in it
        return list(pool.map(fn, items))
