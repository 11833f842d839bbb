"""Where and when a benchmark ran: recorded with every result in bench/results/."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """UTC time, git revision (``-dirty`` with uncommitted changes), machine and load."""
    git = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True,
                         cwd=REPO).stdout.strip()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": git,
        "machine": f"{cpu_model()}, {os.cpu_count()} cpus, {platform.python_implementation()} {platform.python_version()}",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
