"""Threads for scikit-learn fits (a user's ``probe=`` estimator): BLAS limited to one thread."""

from __future__ import annotations

from typing import Any

from threadpoolctl import threadpool_limits

__all__ = ["one_blas_thread"]


def one_blas_thread() -> Any:
    """A context in which numpy's and scipy's BLAS run on one thread: scikit-learn's fits on a few thousand rows x a
    few hundred features are made of small products, and after a torch pass (whose OpenMP threads stay awake) BLAS
    threads on a 2-core machine fought over the cores. Measured on 12,000 x 84 features: DFR's 41 fits took 10.9 s
    with two BLAS threads and 1.8 s with one (``benchmarks/speed.py --head_fits``)."""

    return threadpool_limits(limits=1, user_api="blas")
