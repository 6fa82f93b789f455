"""One BLAS thread per process.

The flow's matrices are small (a covariance of at most a few hundred assets) and Bytewax already runs a
thread per worker; a multi-threaded BLAS (OpenBLAS starts one thread per core) then spends more on waking
and synchronising its threads than on the arithmetic: an 82 × 82 eigen-decomposition takes 0.8 ms on one
thread and 11 ms or more on several on these machines. One thread also fixes the order of every floating
point reduction, so two runs of a replay give the same bits whatever the machine's core count.
"""

from __future__ import annotations


def single_threaded_blas() -> None:
    """Limit every BLAS library loaded in this process to one thread (idempotent, cheap)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
