"""Garbage collection of native containers whose owner process is dead.

A container's state dir ``<state_root>/<id>`` holds ``owner``: the pid of the
process that started it. When that process is gone (``kill -9`` of pytest),
its container processes died with it (pdeathsig chain, pid namespace), but the
cgroup ``ptc/<id>`` and the state dir remain: :func:`sweep` removes them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..linux.cgroups import DEFAULT_ROOT, open_cgroup
from ..spec import cgroups_path
from ..state import default_state_root

__all__ = ["owner_alive", "sweep"]


def owner_alive(state_dir: Path) -> bool | None:
    """Whether the pid in ``state_dir/owner`` is alive; ``None`` without a readable owner."""
    try:
        pid = int((state_dir / "owner").read_text().split()[0])
    except (FileNotFoundError, NotADirectoryError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(state_root: Path | None = None, *, cgroup_root: Path | None = None) -> list[str]:
    """Remove every container under ``state_root`` (default:
    ``default_state_root()``) whose owner process is dead: SIGKILL what is left in
    its cgroup, remove the cgroup ``ptc/<id>`` and the state dir.

    Returns the swept ids, sorted. Dirs without an ``owner`` file are left alone.
    """
    if state_root is None:
        state_root = default_state_root()
    swept: list[str] = []
    try:
        entries = sorted(os.scandir(state_root), key=lambda e: e.name)
    except FileNotFoundError:
        return swept
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        state_dir = Path(entry.path)
        if owner_alive(state_dir) is not False:
            continue
        cgroup = open_cgroup(cgroups_path(entry.name), root=cgroup_root or DEFAULT_ROOT)
        cgroup.kill_all()
        cgroup.remove()
        shutil.rmtree(state_dir, ignore_errors=True)
        swept.append(entry.name)
    return swept
