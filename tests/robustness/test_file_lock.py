"""The inter-process lock of the weights cache and the preprocessed cache: exclusive across
real processes, non-blocking on request, and no lock file left behind."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from voxssl.utils.locking import file_lock

pytestmark = pytest.mark.multiprocess  # other processes hold the locks

_HOLDER = """
import sys, time
from voxssl.utils.locking import file_lock
path, log, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
for _ in range(int(sys.argv[4])):
    with file_lock(path):
        with open(log, "a") as fh:
            fh.write(f"in {time.monotonic()}\\n")
        time.sleep(hold)
        with open(log, "a") as fh:
            fh.write(f"out {time.monotonic()}\\n")
"""


def test_three_processes_never_hold_the_lock_together_and_leave_no_file(tmp_path):
    lock, log = tmp_path / "x.lock", tmp_path / "log.txt"
    processes = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock), str(log), "0.02", "15"])
        for _ in range(3)
    ]
    assert all(p.wait(timeout=120) == 0 for p in processes)
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert len(events) == 90
    assert events == ["in", "out"] * 45  # strictly alternating: never two holders at once
    assert not lock.exists()


def test_non_blocking_lock_reports_a_holder(tmp_path):
    lock = tmp_path / "case.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock), str(tmp_path / "log"), "3", "1"]
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with file_lock(lock, blocking=False) as acquired:
        assert acquired is False
    holder.wait(timeout=60)
    with file_lock(lock, blocking=False) as acquired:
        assert acquired is True
    assert not lock.exists()
