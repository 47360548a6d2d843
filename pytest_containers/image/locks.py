"""File locks of the image store: exclusive locks waited for up to a timeout,
snapshot leases (shared locks), and removal of lock files that nobody holds.

Every lock is a ``flock(2)`` on a file under the store root (``locks/``,
``leases/``), taken on a file opened for that one acquisition. So a lock is
released when its holder releases it, closes the file or dies (a killed pytest
pins nothing); threads exclude each other as processes do; and a holder is
found in ``/proc/locks`` (:func:`holders`). :mod:`filelock`'s ``FileLock``
(``flock`` on Linux) and these locks exclude each other on the same file.

Lock files may be unlinked (:func:`remove_if_free`, by
:func:`pytest_containers.image.gc.prune`) while others wait for them. Whoever
then gets the lock on the unlinked file sees that its path names it no more
(``st_nlink`` 0, or another inode at the path), lets it go and starts over with
the file now at the path: two holders never hold different files of one name.

Waiting: a lock still held after ``WAIT_NOTICE`` seconds is reported once, as a
``WARNING`` of the logger ``pytest_containers.image.locks``: ``waiting for the
store lock <file> held by pid N (<command line>) ...`` (the command line prints
it on stderr; elsewhere it goes wherever logging goes).

Read-only stores: :func:`try_lock` with ``readonly`` opens an existing lock file
read-only (``flock`` needs no write access), so shared locks can still be taken
on a store mounted read-only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from pytest_containers.exceptions import StoreLockTimeoutError

#: Seconds between two tries to take a lock that another process holds.
POLL_INTERVAL = 0.05
#: Seconds of waiting for a held lock after which the wait is reported (once per wait).
WAIT_NOTICE = 1.0
_log = logging.getLogger(__name__)
_CONTENDED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})
_CMDLINE_MAX_CHARS = 120


def try_lock(
    path: Path, *, shared: bool = False, create: bool = True, readonly: bool = False
) -> int | None:
    """Take the lock on ``path`` without waiting: ``LOCK_SH`` when ``shared``, else
    ``LOCK_EX``. Returns the file descriptor holding it (give it to :func:`unlock`),
    or ``None`` when another holder has it, or when ``path`` is absent (or was
    replaced meanwhile) and not ``create``. With ``create``, a missing file is made
    (mode 0644); a missing directory raises ``FileNotFoundError``. With
    ``readonly``, the file is opened read-only and never made (``create`` ignored):
    for a store on a read-only file system.
    """
    if readonly:
        create = False
    access = os.O_RDONLY if readonly else os.O_RDWR
    flags = access | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, operation)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _CONTENDED:
                return None
            raise
        if _names(path, fd):
            return fd
        unlock(fd)  # unlinked or replaced before we got it: the file at the path counts
        if not create:
            return None


def lock(
    path: Path,
    *,
    timeout: float,
    what: str,
    shared: bool = False,
    digest: str | None = None,
    readonly: bool = False,
) -> int:
    """Take the lock on ``path`` (made if missing, unless ``readonly``: see
    :func:`try_lock`), waiting up to ``timeout`` seconds (0: one try) and polling
    every ``POLL_INTERVAL`` seconds; return the file descriptor holding it (give it
    to :func:`unlock`). A wait longer than ``WAIT_NOTICE`` seconds is logged once
    (see the module docstring); ``KeyboardInterrupt`` ends the wait, nothing held.

    Raises :class:`StoreLockTimeoutError` when it is still held after ``timeout``:
    its message says what was waited for (``what``, e.g. ``"the index of the
    store /x"``), the lock file, the holders found in ``/proc/locks`` (pid and
    command line) and the timeout; its ``digest`` field is ``digest``.
    """
    start = time.monotonic()
    deadline = start + timeout
    noticed = False
    while True:
        fd = try_lock(path, shared=shared, readonly=readonly)
        if fd is not None:
            return fd
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            raise timeout_error(path, timeout=timeout, what=what, digest=digest)
        if not noticed and now - start >= WAIT_NOTICE:
            noticed = True
            _log.warning(
                "waiting for the store lock %s held by %s (for %s; up to %g s)...",
                path,
                held_by(path),
                what,
                timeout,
            )
        time.sleep(min(POLL_INTERVAL, left))


def unlock(fd: int) -> None:
    """Release the lock held by ``fd`` (from :func:`lock` or :func:`try_lock`) and
    close it; a forked child's copy of ``fd`` no longer holds it either."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(
    path: Path, *, timeout: float, what: str, digest: str | None = None
) -> Iterator[Path]:
    """Hold the exclusive lock on ``path`` for the block (see :func:`lock`, whose
    :class:`StoreLockTimeoutError` it raises); yields ``path``."""
    fd = lock(path, timeout=timeout, what=what, digest=digest)
    try:
        yield path
    finally:
        unlock(fd)


def remove_if_free(path: Path) -> bool:
    """Unlink the lock file ``path`` if nobody holds its lock; return whether it was
    removed. The file is unlinked while locked here, so that whoever waits for it
    starts over (see the module docstring)."""
    fd = try_lock(path, create=False)
    if fd is None:
        return False
    try:
        path.unlink(missing_ok=True)
    finally:
        unlock(fd)
    return True


class Lease:
    """Shared locks (``LOCK_SH``) on the lease files of some snapshots, held until
    :meth:`release` (idempotent), the end of a ``with`` block, or the death of this
    process. :func:`pytest_containers.image.gc.prune` removes no leased snapshot.

    ``chain_ids``: the snapshots' chainIDs (``sha256:<hex>``), as given;
    ``paths``: their lease files, in the same order. Made by
    :meth:`Store.lease <pytest_containers.image.store.Store.lease>`.
    """

    def __init__(self, chain_ids: Sequence[str], paths: Sequence[Path], fds: Sequence[int]) -> None:
        self.chain_ids = tuple(chain_ids)
        self.paths = tuple(paths)
        self._fds = list(fds)

    @classmethod
    def take(
        cls, leases: Sequence[tuple[str, Path]], *, timeout: float, readonly: bool = False
    ) -> Lease:
        """Lock the lease file of each ``(chain_id, path)``, each waited for up to
        ``timeout`` seconds (only a prune removing that snapshot holds it
        exclusively). Raises :class:`StoreLockTimeoutError`; then nothing is held.

        ``readonly`` (a store this process cannot write): existing lease files are
        locked through read-only descriptors, missing ones cannot be made and are
        left out (``chain_ids`` and ``paths`` list only those held); a prune by
        someone who can write the store may then remove those snapshots."""
        fds: list[int] = []
        taken: list[tuple[str, Path]] = []
        try:
            for chain_id, path in leases:
                if readonly and not path.exists():
                    _log.debug("no lease on %s: %s is missing (read-only store)", chain_id, path)
                    continue
                what = f"a lease on snapshot {chain_id} (a prune is removing it)"
                fds.append(
                    lock(
                        path,
                        timeout=timeout,
                        what=what,
                        shared=True,
                        digest=chain_id,
                        readonly=readonly,
                    )
                )
                taken.append((chain_id, path))
        except BaseException:
            for fd in fds:
                unlock(fd)
            raise
        return cls([c for c, _ in taken], [p for _, p in taken], fds)

    @property
    def held(self) -> bool:
        """Whether the leases are still held (not yet released)."""
        return bool(self._fds)

    def release(self) -> None:
        """Release every lease; a second call does nothing."""
        fds, self._fds = self._fds, []
        for fd in fds:
            unlock(fd)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"<Lease {state} on {len(self.chain_ids)} snapshot(s)>"


def holders(path: Path) -> list[int]:
    """The pids holding a lock on the file at ``path``, from ``/proc/locks``
    (``flock``, POSIX and OFD locks; waiters excluded); sorted, empty when unknown
    (no such file, no ``/proc``, holders in another pid namespace)."""
    try:
        st = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return []
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = set()
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if len(fields) < 6 or fields[1] == "->":
            continue
        if fields[5] == inode and fields[4].isdigit() and int(fields[4]) > 0:
            pids.add(int(fields[4]))
    return sorted(pids)


def describe(pid: int) -> str:
    """``pid 123 (python -m pytest -x)``: a pid and its command line on one line,
    shortened (``this process`` for our own pid, nothing when unreadable)."""
    if pid == os.getpid():
        return f"pid {pid} (this process)"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return f"pid {pid}"
    command = " ".join(" ".join(a.decode(errors="replace").split()) for a in argv)
    if len(command) > _CMDLINE_MAX_CHARS:
        command = command[: _CMDLINE_MAX_CHARS - 3] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def held_by(path: Path) -> str:
    """Who holds the lock on ``path``, for messages: ``pid 12 (python -m pytest)``
    for each holder found in ``/proc/locks``, else ``another process (not found in
    /proc/locks)``."""
    pids = holders(path)
    return ", ".join(map(describe, pids)) if pids else "another process (not found in /proc/locks)"


def timeout_error(
    path: Path, *, timeout: float, what: str, digest: str | None = None
) -> StoreLockTimeoutError:
    """The :class:`StoreLockTimeoutError` for the lock file ``path``, naming its
    holders (:func:`holders`) as found now."""
    pids = holders(path)
    who = held_by(path)
    return StoreLockTimeoutError(
        f"timed out after {timeout:g} s waiting for {what}: lock file {path} is held by {who}",
        lock_path=str(path),
        timeout=timeout,
        holder_pids=pids,
        digest=digest,
    )


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    opened = os.fstat(fd)
    if opened.st_nlink == 0:
        return False
    try:
        return os.path.samestat(os.stat(path), opened)
    except FileNotFoundError:
        return False
