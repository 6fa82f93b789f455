"""Running a flow: the only place that calls Bytewax's runtime and recovery store."""

from __future__ import annotations

import gc
from datetime import timedelta
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main


def run(flow: Dataflow, *, workers: int = 1, epoch_s: float = 10.0, recovery_dir: Path | None = None) -> None:
    """Run `flow` in this process with `workers` threads; snapshot to `recovery_dir` every epoch."""
    # bytewax ships no annotations for these three: hence the ignores
    recovery = RecoveryConfig(str(recovery_dir)) if recovery_dir is not None else None  # type: ignore[no-untyped-call]
    gc.freeze()  # the plan and everything loaded so far live all run: keep the collector from rescanning them
    try:
        cli_main(flow, workers_per_process=workers, epoch_interval=timedelta(seconds=epoch_s),  # type: ignore[no-untyped-call]
                 recovery_config=recovery)
    finally:
        gc.unfreeze()


def init_recovery(recovery_dir: Path, partitions: int = 1) -> None:
    """Create Bytewax's recovery partitions in an empty directory."""
    init_db_dir(recovery_dir, partitions)  # type: ignore[no-untyped-call]
