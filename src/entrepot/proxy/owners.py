"""Who holds a lease (``host:boot.pidns:pid:start:uuid``), and whether it is certainly gone.

A lease owner names the process that holds it: its host name; its machine boot and PID
namespace (the kernel's boot id and the inode of ``/proc/self/ns/pid``: machines that share a
host name, and containers that share one as with host networking, differ there); its pid; the
start time of that process (clock ticks since boot, from ``/proc/<pid>/stat``); and a random
part (one per engine). What callers may rely on:

* :func:`process_owner` makes such a name for this process (at most 100 characters, the
  width of the leases' ``owner`` column).
* :func:`is_gone` is ``True`` only when the owner is a process of **this host and PID
  namespace** that is not running any more: its pid does not exist (or is a zombie), or it
  exists with another start time (the pid was reused). An owner of another host or namespace,
  of this very process, of a system without ``/proc``, or in a form it does not know (such as
  the older ``host:pid:uuid``) is never gone: its lease expires as leases do.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

__all__ = ["is_gone", "process_owner", "start_time"]


def _host() -> str:
    return socket.gethostname()[:50]


def _pid_namespace() -> str:
    """``<boot id>.<pid namespace inode>`` (machines that share a host name differ by boot id;
    containers of one machine that share a host name differ by namespace); ``0`` if unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{boot.replace('-', '')[:12]}.{os.stat('/proc/self/ns/pid').st_ino}"
    except (OSError, UnicodeDecodeError):
        return "0"


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
    started = start_time(pid) or 0
    return f"{_host()}:{_pid_namespace()}:{pid}:{started}:{uuid.uuid4().hex[:12]}"


def is_gone(owner: str) -> bool:
    """Whether ``owner`` is certainly a process of this host that no longer runs."""
    parts = owner.split(":")
    namespace = _pid_namespace()
    if len(parts) != 5 or parts[0] != _host() or namespace == "0" or parts[1] != namespace:
        return False
    try:
        pid, started = int(parts[2]), int(parts[3])
    except ValueError:
        return False
    if pid <= 0 or pid == os.getpid() or started == 0:
        return False
    now = start_time(pid)
    if now is None:
        return True
    return now != 0 and now != started
