"""What v1 and v2 cgroups share: the path, parents, making directories, killing."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import fs

DEFAULT_ROOT = Path("/sys/fs/cgroup")

#: seconds :meth:`freeze` waits for the kernel to report the cgroup frozen
FREEZE_TIMEOUT = 5.0


def kill_until_empty(read_pids: Callable[[], list[int]], timeout: float = 5.0) -> None:
    """SIGKILL every pid ``read_pids()`` lists until it lists none (or ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = read_pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)


class Cgroup:
    """A cgroup named by ``path`` (``"/ptc/<id>"``, or nested like
    ``"/ptc/ptc-session-<pid>/<id>"``) relative to each hierarchy under ``root``.

    Nothing is created until :meth:`create`. Raises ``ValueError`` for a path that is
    not absolute or has ``..``.
    """

    version: int
    path: str

    def __init__(self, path: str, *, root: Path = DEFAULT_ROOT) -> None:
        if not path.startswith("/") or ".." in path.split("/") or not path.strip("/"):
            raise ValueError(f"cgroup path must be absolute without '..', got {path!r}")
        self.path = "/" + path.strip("/")
        self.root = Path(root)
        self._rel = path.strip("/")
        self._parts = self._rel.split("/")
        #: ancestors (relative paths) that this object's create() made
        self._made_parents: set[str] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, root={str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]
                and other.root == self.root)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.path, self.root))

    # -- parents ----------------------------------------------------------------------

    def parent_chain(self) -> list[Any]:
        """The ancestors of this cgroup, nearest first, up to (not including) the
        hierarchy root: for ``/ptc/ptc-session-1/c1`` the cgroups
        ``/ptc/ptc-session-1`` and ``/ptc``, as objects of this class and ``root``."""
        return [type(self)("/" + "/".join(self._parts[:i]), root=self.root)
                for i in range(len(self._parts) - 1, 0, -1)]

    def _removable_parents(self) -> list[str]:
        """Ancestors :meth:`remove` takes away when they become empty, nearest first:
        those this object's :meth:`create` made, and the top-level shared directory
        (``ptc``). An ancestor made by its own ``create()`` (a session parent) is
        never among them: its owner removes it."""
        out = []
        for i in range(len(self._parts) - 1, 0, -1):
            rel = "/".join(self._parts[:i])
            if i == 1 or rel in self._made_parents:
                out.append(rel)
        return out

    def _mkdirs(self, base: Path | str, on_parent: Callable[[Path], None] | None = None
                ) -> list[str]:
        """mkdir each component of the path under ``base``; returns the dirs made.

        ``on_parent(dir)`` is called for every ancestor (existing or made) before its
        child is created. A concurrent removal of an empty shared parent (ENOENT on
        the child) is retried. Raises ``FileExistsError`` when the leaf exists.
        """
        base = str(base)
        if on_parent is None:
            leaf = f"{base}/{self._rel}"
            try:  # the common case: the parent exists, one mkdir
                fs.make_dir(leaf)
                return [leaf]
            except FileNotFoundError:
                pass
        for _attempt in range(20):
            made: list[str] = []
            current = base
            try:
                for i, part in enumerate(self._parts):
                    if on_parent is not None:
                        on_parent(Path(current))
                    current = f"{current}/{part}"
                    try:
                        fs.make_dir(current)
                        made.append(current)
                    except FileExistsError:
                        if i == len(self._parts) - 1:
                            raise
                return made
            except FileNotFoundError:
                if not os.path.isdir(base):
                    raise
                continue  # an empty parent was removed under us by another container
        raise FileNotFoundError(errno.ENOENT, "cgroup parent keeps disappearing", base)

    def _note_made(self, made: list[str], base: Path | str) -> None:
        skip = len(str(base)) + 1
        for path in made:
            rel = path[skip:]
            if rel != self._rel:
                self._made_parents.add(rel)

    @staticmethod
    def _undo(made: list[str]) -> None:
        """Remove what a failed create made, deepest first (the leaf busy-retried,
        shared parents only when empty); errors here must not hide the first one."""
        for path in reversed(made):
            try:
                fs.rmdir_if_empty(path)
            except OSError:
                pass

    def _mkdir_error(self, exc: OSError, path: Path | str) -> Exception:
        if isinstance(exc, FileExistsError):
            return fs.error(f"cgroup already exists: {path}", path=path, errno=exc.errno)
        if getattr(exc, "fields", None) is not None:
            return exc  # already a CgroupError
        return fs.error(f"cannot create cgroup {path}: {os.strerror(exc.errno or 0)}",
                        path=path, errno=exc.errno)
