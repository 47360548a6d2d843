"""The mounts a container without a mount namespace makes in the caller's: recorded
in its state dir before any is made, and undone (deepest first, ``MNT_DETACH``) by
whoever removes the container.

Without ``mount`` in ``linux.namespaces`` the container init sets up its rootfs
in the runtime's own mount namespace (runtime-spec ``config-linux.md#namespaces``:
the container shares the runtime's), as runc 1.1's ``prepareRootfs`` does, and
enters it with ``chroot(2)``. Every mount it makes lies below one mount of ours at
the rootfs path: the rootfs bound onto itself (``ptc-runtime``), or the overlay of
the layers at ``<state dir>/rootfs`` (in-process engine), made private at once
(:func:`~.mounts.mount_root`). runc leaves that mount behind in the caller's
namespace; we take it away with everything below it at ``delete``, at a failed
``create``/``start`` and in the sweep of a dead owner.

Only ours: the rootfs may itself be a mount point made by the caller (podman's
overlay) and may hold the caller's own mounts. :func:`record` writes
``<state dir>/hostmounts.json`` before the init is forked: the rootfs path (real
path), the unique id (``statx(2)`` ``STATX_MNT_ID_UNIQUE``, Linux 6.8, never
reused; else ``STATX_MNT_ID``) of the mount the path resolved to, and the
``/proc/self/mountinfo`` ids of the mounts stacked on it then.
:func:`undo` takes off what is stacked at the path above them, with each such
mount's subtree (kernel ``Documentation/filesystems/sharedsubtree.rst``,
``proc.rst`` 3.5 for mountinfo), and never touches the propagation of any other
mount (runc makes the caller's ``/`` ``rslave``; we do not).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..state import write_json_atomically
from . import syscalls as sc
from .mounts import MountInfo, mountinfo

__all__ = ["RECORD", "HostMounts", "MountProbe", "load", "ours", "probe", "record", "undo"]

#: the record's file name in the state dir
RECORD = "hostmounts.json"
#: <linux/stat.h>
_STATX_MNT_ID = 0x1000
_STATX_MNT_ID_UNIQUE = 0x4000
_STATX_ATTR_MOUNT_ROOT = 0x2000
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_NO_AUTOMOUNT = 0x800
#: ``struct statx``: ``stx_mask`` at 0, ``stx_attributes`` at 8, ``stx_attributes_mask``
#: at 56, ``stx_mnt_id`` at 144; 256 bytes in all
_STATX_SIZE = 256
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
#: the deepest stack of our mounts at one path :func:`undo` takes off (one is usual)
_MAX_STACK = 16

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class MountProbe:
    """What a path resolves to (``statx(2)``): ``mount_id``, the mount's id in
    ``/proc/self/mountinfo``; ``unique_id``, its never-reused id (``0`` before
    Linux 6.8); ``mount_root``: the path is the root of that mount (a mount point)."""

    mount_id: int
    unique_id: int
    mount_root: bool


def _statx(path: str, mask: int) -> tuple[int, int, bool]:
    """``(stx_mask, stx_mnt_id, is a mount root)`` of ``path`` (no symlink followed at
    the end, no automount). Raises ``OSError``."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _libc.statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW | _AT_NO_AUTOMOUNT,
                   mask, buf) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"statx: {os.strerror(code)}", path)
    got = _U32.unpack_from(buf, 0)[0]
    attributes = _U64.unpack_from(buf, 8)[0]
    return got, _U64.unpack_from(buf, 144)[0], bool(attributes & _STATX_ATTR_MOUNT_ROOT)


def probe(path: Path | str) -> MountProbe | None:
    """The mount ``path`` resolves to now (the top of a stack of mounts at it);
    ``None`` when the path does not exist. Raises ``OSError`` for other errors."""
    try:
        got, legacy, root = _statx(str(path), _STATX_MNT_ID)
        unique = 0
        if got & _STATX_MNT_ID:
            got2, unique, _ = _statx(str(path), _STATX_MNT_ID_UNIQUE)
            if not got2 & _STATX_MNT_ID_UNIQUE:
                unique = 0
    except (FileNotFoundError, NotADirectoryError):
        return None
    return MountProbe(legacy, unique, root)


@dataclass(frozen=True)
class HostMounts:
    """The record (``<state dir>/hostmounts.json``): ``target``, the rootfs's real
    path; ``below_unique``/``below_id``: the unique and mountinfo ids of the mount it
    resolved to before set-up (``0``: the path did not exist yet, as the in-process
    overlay's mount point); ``stacked``: mountinfo ids of the mounts at ``target``
    then (the caller's: never unmounted)."""

    target: str
    below_unique: int = 0
    below_id: int = 0
    stacked: tuple[int, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "below_unique": self.below_unique,
                "below_id": self.below_id, "stacked": list(self.stacked)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> HostMounts:
        """Read back :meth:`to_json`; ``ValueError`` for anything else."""
        try:
            target = data["target"]
            stacked = data.get("stacked") or []
            if not isinstance(target, str) or not target.startswith("/") \
                    or not isinstance(stacked, list):
                raise TypeError
            return cls(target, int(data.get("below_unique") or 0),  # type: ignore[call-overload]
                       int(data.get("below_id") or 0),  # type: ignore[call-overload]
                       tuple(int(i) for i in stacked))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{RECORD}: not a record of host mounts: {data!r}") from None

    def is_ours(self, top: MountProbe) -> bool:
        """Whether ``top`` (what ``target`` resolves to now) is a mount we stacked at
        ``target``: a mount root, neither the mount below nor one of ``stacked``."""
        if not top.mount_root:
            return False
        if self.below_unique and top.unique_id:
            if top.unique_id == self.below_unique:
                return False
        elif self.below_id and top.mount_id == self.below_id:
            return False
        return top.mount_id not in self.stacked


def record(state_dir: Path | str, rootfs: Path | str) -> HostMounts:
    """Record, before the init is forked, what is mounted at ``rootfs`` now, in
    ``<state_dir>/hostmounts.json`` (written whole: a temporary file, ``rename``), so
    that :func:`undo` takes off only what the container's set-up stacks there. A
    missing ``rootfs`` (the in-process overlay's mount point, made after the fork
    in the state dir) records nothing below. Returns the record; raises
    ``OSError``."""
    target = os.path.realpath(rootfs)
    top = probe(target)
    stacked: tuple[int, ...] = ()
    if top is not None and top.mount_root:
        stacked = tuple(m.mount_id for m in mountinfo() if m.mount_point == target)
    found = HostMounts(target, top.unique_id if top else 0, top.mount_id if top else 0,
                       stacked)
    write_json_atomically(f"{state_dir}/{RECORD}", found.to_json())
    return found


def load(state_dir: Path | str) -> HostMounts | None:
    """The record of ``state_dir``; ``None`` without one (a container with its own
    mount namespace). Raises ``ValueError`` for a file that is not a record."""
    try:
        with open(f"{state_dir}/{RECORD}", "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        raise ValueError(f"{state_dir}/{RECORD}: not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{state_dir}/{RECORD}: not a record of host mounts")
    return HostMounts.from_json(parsed)


def _subtree(infos: Sequence[MountInfo], top_id: int) -> list[MountInfo]:
    """The mounts below the mount ``top_id`` (itself excluded), children before their
    parent and, among siblings, the last mounted first: the order to unmount in."""
    children: dict[int, list[MountInfo]] = {}
    for m in infos:
        if m.mount_id != m.parent_id:
            children.setdefault(m.parent_id, []).append(m)
    out: list[MountInfo] = []
    seen = {top_id}

    def visit(mount_id: int) -> None:
        for child in reversed(children.get(mount_id, ())):
            if child.mount_id in seen:
                continue
            seen.add(child.mount_id)
            visit(child.mount_id)
            out.append(child)

    visit(top_id)
    return out


def ours(state_dir: Path | str) -> list[str]:
    """Mount points of the mounts the container's set-up made in this namespace that
    are still there: each mount stacked at the rootfs since :func:`record` (from the
    top down) and every mount below it, deepest first; ``[]`` without a record."""
    found = load(state_dir)
    if found is None:
        return []
    top = probe(found.target)
    if top is None or not found.is_ours(top):
        return []
    infos = mountinfo()
    by_id = {m.mount_id: m for m in infos}
    out: list[str] = []
    current = by_id.get(top.mount_id)
    while (current is not None and current.mount_point == found.target
           and current.mount_id not in found.stacked
           and (found.below_unique or current.mount_id != found.below_id)):
        out += [m.mount_point for m in _subtree(infos, current.mount_id)]
        out.append(current.mount_point)
        current = by_id.get(current.parent_id)
    return out


def _detach(path: str, mount_id: int) -> bool:
    """``umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)`` when ``path`` still resolves to
    the root of the mount ``mount_id``; whether it did."""
    now = probe(path)
    if now is None or not now.mount_root or now.mount_id != mount_id:
        return False
    try:
        sc.umount2(path, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise
        return False
    return True


def undo(state_dir: Path | str) -> list[str]:
    """Unmount what the container's set-up stacked at its rootfs in this mount
    namespace since :func:`record`, with everything below it: deepest first, each
    with ``MNT_DETACH`` (no symlink followed), then the mount at the rootfs; repeated
    while another mount of ours is stacked there. Mounts of the caller (at the rootfs
    before the record, or anywhere else) stay. Then the record is removed. Call it
    once the container's processes are gone (a live init could mount again).

    Returns the mount points unmounted; ``[]`` without a record. Raises ``OSError``
    (``EBUSY``) when a mount of ours stays (the record is kept, for the next try),
    ``ValueError`` for a record that cannot be read."""
    found = load(state_dir)
    if found is None:
        return []
    done: list[str] = []
    for _ in range(_MAX_STACK):
        top = probe(found.target)
        if top is None or not found.is_ours(top):
            break
        for m in _subtree(mountinfo(), top.mount_id):
            if _detach(m.mount_point, m.mount_id):
                done.append(m.mount_point)
        sc.umount2(found.target, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
        done.append(found.target)
    else:
        top = probe(found.target)
        if top is not None and found.is_ours(top):
            raise OSError(errno.EBUSY, f"still mounted: {found.target}", found.target)
    try:
        os.unlink(f"{state_dir}/{RECORD}")
    except FileNotFoundError:
        pass
    return done
