"""The host's cgroup hierarchies: which version, where mounted, and sweeping a path."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from .. import syscalls
from ..mounts import mountinfo
from . import fs
from .base import DEFAULT_ROOT
from .v1 import CgroupV1
from .v2 import CgroupV2

CGROUP2_SUPER_MAGIC = 0x63677270


def detect(root: Path = DEFAULT_ROOT) -> Literal[1, 2]:
    """2 when ``root`` is a cgroup2 mount (``CGROUP2_SUPER_MAGIC``), else 1 (v1 or hybrid)."""
    return 2 if syscalls.statfs_type(root) == CGROUP2_SUPER_MAGIC else 1


def open_cgroup(
    path: str, *, root: Path = DEFAULT_ROOT, version: int | None = None
) -> CgroupV1 | CgroupV2:
    """The cgroup at ``path`` (like ``"/ptc/<id>"``, or nested like
    ``"/ptc/ptc-session-<pid>/<id>"``) under ``root``; nothing is created.

    ``version`` defaults to :func:`detect` of ``root``. Raises ``ValueError`` for a
    version other than 1 or 2, or a path that is not absolute or has ``..``.
    """
    if version is None:
        version = detect(root)
    if version == 2:
        return CgroupV2(path, root=root)
    if version == 1:
        return CgroupV1(path, root=root)
    raise ValueError(f"cgroup version must be 1 or 2, got {version!r}")


def hierarchies() -> list[tuple[str, Path]]:
    """Every mounted cgroup hierarchy as ``(fstype, mount point)``; fstype is
    ``cgroup`` (v1, named ones such as ``name=systemd`` included) or ``cgroup2``."""
    return [(m.fstype, Path(m.mount_point)) for m in mountinfo()
            if m.fstype in ("cgroup", "cgroup2")]


def remove_everywhere(path: str, *, keep: str = "") -> None:
    """rmdir ``path`` (``/ptc/<id>``) in every mounted hierarchy — runc also makes it
    in ``name=systemd`` and a hybrid host's ``unified`` — then each empty parent
    up to (not including) the hierarchy root, or up to ``keep`` (a parent such as
    a session's, kept with its ancestors). Missing is fine; a busy leaf is
    retried briefly, then ``CgroupError``."""
    rel = path.strip("/")
    for _, mount in hierarchies():
        leaf = mount / rel
        if leaf.is_dir():
            fs.rmdir(leaf)
        for parent in list(leaf.relative_to(mount).parents)[:-1]:
            if keep and "/" + str(parent) == "/" + keep.strip("/"):
                break
            fs.rmdir_if_empty(mount / parent)
