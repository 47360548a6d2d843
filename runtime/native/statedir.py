"""The state dir of a native container: written and removed with few syscalls.

``<state_root>/<id>``: ``config.json``, ``owner``, ``stdout``, ``stderr``,
``rootfs/`` (the overlay's mount point, mounted only inside the container),
``upper/`` and ``work/`` (the overlay's; ``work/work`` is overlayfs's own); for a
``ptc-runtime`` container ``state.json`` (and its ``.tmp``) and ``exec.fifo``
(:mod:`.state`). On a
filesystem mounted with ``discard`` every freed block is a synchronous discard
(0.1-2 ms each), so removal does one ``unlink``/``rmdir`` per entry and walks
only what the container left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

__all__ = ["remove_state_dir", "write_file"]


def _remove_tree(path: Path) -> None:
    """``rm -r`` tolerating what is already gone."""
    def onexc(func, p, exc):  # noqa: ANN001
        if isinstance(exc, FileNotFoundError):
            return
        raise exc

    shutil.rmtree(path, onerror=lambda f, p, info: onexc(f, p, info[1]))


#: the state dir's files, and its dirs deepest first (``work/work``: overlayfs's own)
_STATE_FILES = ("config.json", "owner", "stdout", "stderr", "exec.fifo", "state.json",
                "state.json.tmp")
_STATE_DIRS = ("rootfs", "work/work", "work", "upper")


def _empty_dir(path: str) -> None:
    """Remove what is in ``path`` (not following symlinks); the container that wrote
    it is dead, nothing changes it meanwhile."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                _empty_dir(entry.path)
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)


def remove_state_dir(path: Path) -> None:
    """Remove a state dir: its known files and dirs one syscall each, ``upper`` and
    ``work`` emptied first when the container left something there; ``rm -r``
    (:func:`_remove_tree`) for anything else. Tolerates what is already gone."""
    base = str(path)
    try:
        for name in _STATE_FILES:
            try:
                os.unlink(f"{base}/{name}")
            except FileNotFoundError:
                pass
        for name in _STATE_DIRS:
            target = f"{base}/{name}"
            try:
                os.rmdir(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
                _empty_dir(target)
                os.rmdir(target)
        os.rmdir(base)
        return
    except FileNotFoundError:
        if not os.path.lexists(base):
            return
    except OSError:
        pass
    _remove_tree(path)


def write_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Create (or truncate) ``path`` and write ``data``: ``open``, ``write``, ``close``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
