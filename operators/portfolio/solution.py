"""The result of one portfolio solve (kept apart from the optimisers, so that a flow without an optimiser never
imports cvxpy: the import alone costs seconds per process)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Solution:
    """Weights from one solve, and how they were obtained.

    `status` is the solver status of the solve that produced `weights` (``"optimal"``, ``"optimal_inaccurate"``),
    or, when ``fallback == "previous"``, of the last failed try (``"infeasible"``, ``"unbounded"``,
    ``"solver_error"``, ``"nan_input"``, ...). `solver` is the solver that produced the weights (``""`` when none
    did); `fallback` is ``"none"``, ``"second_solver"`` or ``"previous"``; `message` says why a fallback was taken.
    """

    weights: F64
    status: str
    solver: str
    fallback: str
    objective: float | None
    message: str
