"""The processes of a container's cgroup, as ``docker top`` / ``runc ps`` list them.

The pids come from the cgroup's own ``cgroup.procs`` files (kernel
``Documentation/admin-guide/cgroup-v1/cgroups.rst`` 2.2, ``cgroup-v2.rst``
"Processes"), so a process is listed whatever pid namespace it is in (an
``exec`` helper joining from the host too); the rest from ``/proc/<pid>``
(``proc(5)``): ``status`` (``PPid``, ``Uid``, ``NSpid``: the pid in each
nested pid namespace, the container's last, Linux 4.1+, ``State``) and
``cmdline``. User names come from the container's own ``/etc/passwd``, read
through ``/proc/<pid>/root`` and resolved inside it
(:func:`~.process.read_in_root`: a symlink cannot lead out, a FIFO is never
opened). A process that exits while it is read is left out, and so is a zombie:
the kernel takes an exiting task out of its cgroup before it waits to be reaped
(``cgroup_exit``), so a container's unreaped orphans are found by walking
``/proc`` from its PID 1, not here.
"""

from __future__ import annotations

import os
from typing import Protocol

from ..types import ProcessInfo
from .process import read_in_root

__all__ = ["process_info", "processes"]


class _HasPids(Protocol):
    def pids(self, *, recursive: bool = False) -> list[int]: ...


def _status_fields(pid: int) -> dict[str, str] | None:
    """``/proc/<pid>/status`` as ``{key: value}``; ``None`` when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = {}
    for line in data.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def _user_names(pid: int, cache: dict[str, dict[int, str]]) -> dict[int, str]:
    """uid -> name from the ``/etc/passwd`` of ``pid``'s root (empty when unreadable);
    cached by the root's ``(st_dev, st_ino)``, the same for every process of a
    container."""
    root = f"/proc/{pid}/root"
    try:
        st = os.stat(root)
    except OSError:
        return {}
    key = f"{st.st_dev}:{st.st_ino}"
    names = cache.get(key)
    if names is None:
        names = {}
        try:
            data = read_in_root(root, "/etc/passwd") or b""
        except (OSError, ValueError):
            data = b""
        for line in data.decode(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit():
                names.setdefault(int(parts[2]), parts[0])
        cache[key] = names
    return names


def process_info(pid: int, *, passwd_cache: dict[str, dict[int, str]] | None = None
                 ) -> ProcessInfo | None:
    """What ``/proc/<pid>`` says of host pid ``pid``; ``None`` when it has exited (and
    been reaped). ``passwd_cache``: shared between calls to read each root's
    ``/etc/passwd`` once."""
    fields = _status_fields(pid)
    if fields is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    args = tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1]) if raw else ()
    if not args:
        args = (f"[{fields.get('Name', '?')}]",)
    nspids = fields.get("NSpid", "").split()
    uid = int((fields.get("Uid") or "0").split()[0])
    names = _user_names(pid, {} if passwd_cache is None else passwd_cache)
    return ProcessInfo(
        pid=pid,
        ns_pid=int(nspids[-1]) if len(nspids) > 1 else None,
        ppid=int(fields.get("PPid") or 0),
        uid=uid,
        user=names.get(uid, str(uid)),
        state=(fields.get("State") or "?")[:1],
        args=args,
    )


def processes(cgroup: _HasPids) -> list[ProcessInfo]:
    """Every process of ``cgroup`` (a :class:`~..linux.cgroups.CgroupV1` or
    ``CgroupV2``; its sub-cgroups included), by host pid. Empty when the cgroup is
    gone or empty. Raises ``OSError`` only for a cgroup file that exists but cannot be
    read."""
    try:
        pids = cgroup.pids(recursive=True)
    except FileNotFoundError:
        return []
    cache: dict[str, dict[int, str]] = {}
    found = [process_info(pid, passwd_cache=cache) for pid in pids]
    return [p for p in found if p is not None]
