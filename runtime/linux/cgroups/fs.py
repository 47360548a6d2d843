"""The cgroupfs file interface: mkdir, rmdir, one-``write(2)`` writes, small reads.

Every directory creation goes through :func:`make_dir`, every removal through
:func:`remove_dir` and every write through :func:`write`, looked up on this
module at call time, so that tests can point them at a fake tree
(``tests/unit/test_cgroups_v2.py``). Parsers for the kernel's file formats
(``Documentation/admin-guide/cgroup-v2.rst`` "Interface Files": flat keyed,
nested keyed, single value) live here too.
"""

from __future__ import annotations

import errno as _errno
import os
import time
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import CgroupError

#: EBUSY retries of rmdir: a task that just exited may still be listed briefly
RMDIR_TRIES = 200
RMDIR_DELAY = 0.005

#: v1 ``memory.limit_in_bytes`` reads at least this when unlimited
#: (``PAGE_COUNTER_MAX`` pages: 9223372036854771712 with 4 KiB pages)
V1_UNLIMITED = 1 << 62


def error(message: str, *, path: Path | str | None = None, errno: int | None = None,
          value: str | None = None, field: str | None = None) -> CgroupError:
    """A :class:`CgroupError` with its fields: ``path`` (the interface file or
    directory), ``errno``, ``value`` (what was written) and ``field`` (the
    runtime-spec field it came from, like ``"linux.resources.pids.limit"``)."""
    return CgroupError(message, path=None if path is None else str(path), errno=errno,
                       value=value, field=field)


def invalid(field: str, value: Any, why: str) -> CgroupError:
    """The error for a bad ``linux.resources`` value (``errno`` EINVAL, no path):
    raised before anything is created."""
    return error(f"{field}: {value!r} {why}", errno=_errno.EINVAL, value=repr(value),
                 field=field)


def make_dir(path: Path | str) -> None:
    """``mkdir`` one cgroup directory (the kernel fills in its interface files)."""
    os.mkdir(path)


def remove_dir(path: Path | str) -> None:
    """``rmdir`` one cgroup directory (the kernel drops its interface files)."""
    os.rmdir(path)


def write(path: Path | str, value: str) -> None:
    """Write ``value`` to a cgroup interface file in a single ``write(2)``.

    Raises :class:`CgroupError` naming the file and the value (``errno`` from the
    kernel: EINVAL for a value it rejects, EBUSY for one it cannot apply now,
    ENOENT for a file the enabled controllers do not provide).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise error(f"cannot write {value!r} to {path}: {os.strerror(exc.errno or 0)}",
                    path=path, errno=exc.errno, value=value) from exc


def read(path: Path | str) -> str | None:
    """The file's text, or ``None`` when it does not exist (``open``/``read``/``close``:
    interface files are small, and a buffered text file costs four more syscalls)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:  # ENODEV: the cgroup went away between open and read
        if exc.errno not in (_errno.ENODEV, _errno.ENOENT):
            raise
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", errors="replace")


def read_int(path: Path | str) -> int | None:
    """A single-value file as an int; ``None`` when missing, ``"max"`` or not a number."""
    text = read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def keyed(text: str | None) -> dict[str, int]:
    """Flat keyed files (``"key value"`` lines: ``cpu.stat``, ``memory.events``,
    ``memory.oom_control``, ``cgroup.events``)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_procs(text: str | None) -> list[int]:
    """``cgroup.procs``/``tasks``: one pid a line."""
    return [int(p) for p in (text or "").split()]


def v1_io_bytes(text: str | None) -> tuple[int, int] | None:
    """``(read, written)`` bytes summed over devices from a v1
    ``blkio.*io_service_bytes*`` file (``"MAJ:MIN Read N"`` lines, then ``"Total N"``)."""
    if text is None:
        return None
    read_bytes = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read_bytes += int(parts[2])
            elif parts[1] == "Write":
                written += int(parts[2])
    return read_bytes, written


def v2_io_bytes(text: str | None) -> tuple[int, int] | None:
    """``(read, written)`` bytes summed over devices from v2 ``io.stat`` (nested keyed:
    ``"MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N"``)."""
    if text is None:
        return None
    read_bytes = written = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if value.isdigit():
                if key == "rbytes":
                    read_bytes += int(value)
                elif key == "wbytes":
                    written += int(value)
    return read_bytes, written


def child_dirs(path: Path | str) -> list[Path]:
    """The child cgroups of ``path`` (its subdirectories); none when it is missing.

    A directory's link count is 2 plus its subdirectories (kernfs keeps it so, like
    ext4 and tmpfs): one ``stat`` answers for a leaf without listing its files."""
    try:
        if os.stat(path).st_nlink <= 2:
            return []
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def descendants(path: Path | str) -> list[Path]:
    """Every cgroup below ``path``, deepest first (the order ``rmdir`` needs)."""
    out: list[Path] = []
    for child in child_dirs(path):
        out += descendants(child)
        out.append(child)
    return out


def rmdir(path: Path | str) -> None:
    """Remove one cgroup directory; ENOENT tolerated, EBUSY retried briefly
    (:data:`RMDIR_TRIES` times :data:`RMDIR_DELAY` seconds), then :class:`CgroupError`."""
    for attempt in range(RMDIR_TRIES):
        try:
            remove_dir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != _errno.EBUSY or attempt == RMDIR_TRIES - 1:
                raise error(f"cannot remove cgroup {path}: {os.strerror(exc.errno or 0)}",
                            path=path, errno=exc.errno) from exc
            time.sleep(RMDIR_DELAY)


def rmdir_if_empty(path: Path | str) -> None:
    """Remove a parent cgroup only if it is empty: EBUSY/ENOTEMPTY/ENOENT mean another
    container still uses it or it is already gone."""
    try:
        remove_dir(path)
    except OSError as exc:
        if exc.errno not in (_errno.EBUSY, _errno.ENOTEMPTY, _errno.ENOENT, _errno.EEXIST):
            raise
