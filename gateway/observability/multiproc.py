"""The directory prometheus-client's multiprocess mode keeps its values in.

A module of its own, importing nothing of prometheus-client: it must run before the
library is first imported (it picks its value store at import, see metrics.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> Path:
    """A fresh, private directory for the multiprocess values, set in the environment,
    which the writer and the front processes inherit. Stale files from an earlier run
    would add its counts to this one's, hence a new directory each start."""
    path = Path(tempfile.mkdtemp(prefix="mrx-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
