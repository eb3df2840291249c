"""What every measured child process reports: events, time from the first record seen to the last
one processed, and its own peak resident memory."""

from __future__ import annotations

import os
from pathlib import Path


def peak_rss_mib(pid: int | None = None) -> float | None:
    """The process' high-water resident set size (VmHWM), in MiB; None where /proc has no answer."""
    try:
        status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def rss_mib(pid: int | None = None) -> float | None:
    """The process' current resident set size (VmRSS), in MiB."""
    try:
        status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None
