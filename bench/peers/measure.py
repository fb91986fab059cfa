"""Run one benchmarked process and measure it from outside: wall seconds and peak RSS of its tree.

The process's standard output goes to a file (the fastest consumer a peer can have, and the harness
counts records from it after the clock stops). Peak RSS is sampled from ``/proc`` every
``interval_s``: the larger of the highest sum of ``VmRSS`` over the process and all its descendants,
and the highest ``VmHWM`` (the kernel's own high-water mark) of any one of them. Not ``ru_maxrss``
from ``wait4``: Linux carries the high-water mark of the forked copy of the *parent* across
``exec``, so a child of a benchmark holding 100k records in its sandbox would report the
benchmark's size. A peak reached only in the last ``interval_s`` before exit can be missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Measured", "count_records", "run_measured", "tree_rss_bytes"]


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int  # bytes
    returncode: int
    stderr_tail: str


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes; zeros once it is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


def tree_rss_bytes(pid: int) -> tuple[int, int]:
    """Resident set of ``pid`` plus every descendant, now; and the highest VmHWM among them."""
    total = top = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        rss, hwm = _memory(p)
        total, top = total + rss, max(top, hwm)
        todo += _children(p)
    return total, top


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout_path: Path,
    cwd: Path | None = None,
    interval_s: float = 0.02,
    timeout_s: float = 3600,
) -> Measured:
    """Start ``cmd``, wait for it, and return its wall time (start to exit) and peak tree RSS."""
    peak = 0
    stop = threading.Event()
    with stdout_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - the benchmark's own command lines
            list(cmd), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.PIPE
        )

        def sample() -> None:
            nonlocal peak
            while not stop.wait(interval_s):
                peak = max(peak, *tree_rss_bytes(proc.pid))

        stderr: list[bytes] = []
        drain = threading.Thread(target=lambda: stderr.append(proc.stderr.read() if proc.stderr else b""))
        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        drain.start()
        sampler.start()
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        _, status = os.waitpid(proc.pid, 0)  # blocks without holding the GIL
        seconds = time.perf_counter() - started
        killer.cancel()
        stop.set()
        sampler.join()
        drain.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.stderr:
            proc.stderr.close()
    tail = b"".join(stderr)[-3000:].decode(errors="replace")
    return Measured(seconds, peak, proc.returncode, tail)


def _messages(path: Path) -> Iterator[dict[str, object]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.startswith(b"{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def count_records(path: Path, id_keys: Sequence[str]) -> tuple[int, int]:
    """(RECORD messages, distinct record ids) in a Singer or Airbyte message stream.

    Singer writes ``{"type": "RECORD", "record": {...}}``; Airbyte ``{"type": "RECORD", "record":
    {"data": {...}}}``. The id is the first of ``id_keys`` present in the record's data.
    """
    count, ids = 0, set()
    for msg in _messages(path):
        if msg.get("type") != "RECORD":
            continue
        rec = msg.get("record")
        if not isinstance(rec, dict):
            continue
        data = rec.get("data", rec) if "data" in rec and isinstance(rec.get("data"), dict) else rec
        count += 1
        for key in id_keys:
            if key in data:
                ids.add(str(data[key]))
                break
    return count, len(ids)
