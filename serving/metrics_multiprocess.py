"""prometheus-client's multiprocess mode, for ``--workers`` > 1: its directory of
per-worker files, set up before the workers start and kept free of dead workers' gauges.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that died (uvicorn restarts them with a new pid).

    Their counters and histograms stay: totals must not go down.
    """
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _is_alive(pid):
            prometheus_multiprocess.mark_process_dead(pid, directory)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_dir() -> Path:
    """Switch the workers about to start to multiprocess mode; call BEFORE they start.

    Sets ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory: the operator's own (emptied
    of the last run's files) or a fresh temporary one, removed when this process exits.
    uvicorn spawns its workers, so they import prometheus-client with the variable set.
    A single-process server calls this only when the variable was set before it started
    (prometheus-client then keeps even its values in files), so a fresh start counts from
    zero; without it, its registry is in memory and the variable must stay unset.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="mnist-serve-metrics-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory
