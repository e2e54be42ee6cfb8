"""Who holds a lease: ``host:pid:start:uuid``, and whether that process is certainly gone.

A lease owner names the process that holds it: its host, its pid, the start time of that
process (clock ticks since boot, from ``/proc/<pid>/stat``; ``0`` where there is no
``/proc``; a zombie counts as gone) and a random part (one per engine). What callers may rely on:

* :func:`process_owner` makes such a name for this process (at most 100 characters, the
  width of the leases' ``owner`` column).
* :func:`is_gone` is ``True`` only when the owner is a process of **this host** that is not
  running any more: its pid does not exist, or it exists with another start time (the pid was
  reused). An owner of another host, of this very process, or in a form it does not know is
  never gone (its lease then expires as leases do). Names of the older form ``host:pid:uuid``
  are judged by the pid alone.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

__all__ = ["is_gone", "process_owner", "start_time"]


def _host() -> str:
    return socket.gethostname()[:60]


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot; ``None`` if there is no
    such process; ``0`` when the system does not tell (no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return 0 if _pid_exists(pid) else None
    # the fields after the command name (which may hold spaces and parentheses)
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[:1] == ["Z"]:
        return None  # a zombie: dead, only not reaped yet
    try:
        return int(fields[19])  # field 22 of proc(5): starttime
    except (IndexError, ValueError):
        return 0


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_owner() -> str:
    """A new owner name for this process (see the module doc)."""
    pid = os.getpid()
    return f"{_host()}:{pid}:{start_time(pid) or 0}:{uuid.uuid4().hex[:12]}"


def is_gone(owner: str) -> bool:
    """Whether ``owner`` is certainly a process of this host that no longer runs."""
    parts = owner.split(":")
    if len(parts) not in (3, 4) or parts[0] != _host():
        return False
    try:
        pid = int(parts[1])
        started = int(parts[2]) if len(parts) == 4 else None
    except ValueError:
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    now = start_time(pid)
    if now is None:
        return True
    return started is not None and started != 0 and now != 0 and now != started
