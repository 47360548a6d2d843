"""Garbage collection of the image store: :func:`prune`, behind :meth:`Store.prune
<pytest_containers.image.store.Store.prune>`.

Mark: the closure of ``index.json`` (:func:`reachable`). Sweep, under the
index lock: unreachable blobs and snapshots past a grace period, except
snapshots that a container leases (:meth:`Store.lease
<pytest_containers.image.store.Store.lease>`) or that are being unpacked;
stale temp files; and lock files that nobody holds (blob and unpack locks;
lease files of snapshots that no longer exist), removed as
:func:`pytest_containers.image.locks.remove_if_free` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_containers.image import locks
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import is_digest
from pytest_containers.image.store import (
    PRUNE_GRACE,
    PRUNE_STALE_TEMP,
    Store,
    chain_ids,
    rmtree,
)

#: Largest JSON blob (manifest, index, config) that prune reads, in bytes.
_JSON_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class PruneReport:
    """What :func:`prune` did: removed blob digests (``sha256:<hex>``), snapshot
    chainIDs, stale temp paths and free lock files (``locks``: lock and lease files
    found unheld; those of a removed snapshot go with it, unlisted);
    ``in_use``: chainIDs of snapshots no name reaches that were kept because a
    container leases them; ``freed_bytes``: sizes of the removed files, in bytes."""

    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    temp: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    in_use: list[str] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)


def prune(
    store: Store, *, grace: float = PRUNE_GRACE, stale_temp: float = PRUNE_STALE_TEMP
) -> PruneReport:
    """Remove from ``store`` the blobs and snapshots that no name reaches and no
    container leases, stale temp files, and the lock files nobody holds.

    Reachable: :func:`reachable`. Unreachable blobs and snapshots whose mtime is
    older than ``grace`` seconds are removed; a snapshot only when nobody holds
    its unpack lock (:meth:`Store.snapshot_lock_path`) nor a lease on it
    (:meth:`Store.lease_path`; both taken here with ``LOCK_EX|LOCK_NB``), renamed
    to ``.tmp-*`` first so that no half-deleted snapshot keeps its name; a leased
    one is listed in ``in_use``. Temp entries (``tmp/*``, ``snapshots/.tmp-*``,
    ``oci/.tmp-*``) go when nothing in them changed for ``stale_temp`` seconds.
    Lock files (``locks/blob-*``, ``locks/snapshot-*``, and ``leases/*`` of
    snapshots that do not exist) go when nobody holds them.

    The index lock is held throughout, so no name appears meanwhile; a
    concurrent pull writes its blobs (or, via :meth:`Store.has_blob`, refreshes
    reused ones) before naming them, and they are younger than ``grace``; a
    container leases its snapshots before they are unpacked or reused. Raises
    :class:`StoreLockTimeoutError` when the index lock is not free in time.
    """
    now = time.time()
    report = PruneReport()
    with store.index_lock():
        blobs, chains = reachable(store)
        for path in sorted(store.blobs_dir.iterdir()):
            digest = f"sha256:{path.name}"
            if is_digest(digest) and digest not in blobs and _age(path, now) > grace:
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                report.blobs.append(digest)
                report.freed_bytes += size
        for path in sorted(store.snapshots_dir.iterdir()):
            chain_id = f"sha256:{path.name}"
            if is_digest(chain_id) and chain_id not in chains and _age(path, now) > grace:
                _remove_snapshot(store, chain_id, report)
        temps = [*store.tmp_dir.iterdir(), *store.snapshots_dir.glob(".tmp-*")]
        for path in [*temps, *store.layout.glob(".tmp-*")]:
            if _age(path, now, newest=True) > stale_temp:
                report.freed_bytes += _tree_bytes(path)
                if path.is_dir() and not path.is_symlink():
                    rmtree(path)
                else:
                    path.unlink(missing_ok=True)
                report.temp.append(path)
        _remove_free_locks(store, report)
    return report


def _remove_snapshot(store: Store, chain_id: str, report: PruneReport) -> None:
    """Remove one unreachable snapshot unless it is leased (then listed in
    ``in_use``) or being unpacked; its lease and unpack lock files go with it,
    each unlinked while held here."""
    lease_path = store.lease_path(chain_id)
    leased = locks.try_lock(lease_path)
    if leased is None:
        report.in_use.append(chain_id)
        return
    try:
        unpack_lock = store.snapshot_lock_path(chain_id)
        unpacking = locks.try_lock(unpack_lock)
        if unpacking is None:
            return  # being unpacked right now
        try:
            path = store.snapshot_path(chain_id)
            doomed = store.snapshots_dir / f".tmp-prune-{path.name}"
            os.rename(path, doomed)
            report.freed_bytes += _tree_bytes(doomed)
            rmtree(doomed)
            report.snapshots.append(chain_id)
            unpack_lock.unlink(missing_ok=True)
        finally:
            locks.unlock(unpacking)
        lease_path.unlink(missing_ok=True)  # a lessee waiting for it starts over
    finally:
        locks.unlock(leased)


def _remove_free_locks(store: Store, report: PruneReport) -> None:
    """Unlink the blob and unpack lock files nobody holds, and the free lease files
    of snapshots that do not exist."""
    candidates = [
        *sorted(store.locks_dir.glob("blob-*.lock")),
        *sorted(store.locks_dir.glob("snapshot-*.lock")),
    ]
    for path in sorted(store.leases_dir.glob("*.lock")):
        chain_id = f"sha256:{path.name.removesuffix('.lock')}"
        if is_digest(chain_id) and not store.snapshot_path(chain_id).exists():
            candidates.append(path)
    for path in candidates:
        if locks.remove_if_free(path):
            report.locks.append(path)


def reachable(store: Store) -> tuple[set[str], set[str]]:
    """``(blob digests, snapshot chainIDs)`` reachable from ``store``'s ``index.json``.

    Any JSON blob with a ``schemaVersion`` is walked for descriptors
    (``manifests``, ``config``, ``layers``, ``blobs``, ``subject``); image
    configs give chainIDs. Missing or malformed blobs reach nothing more.
    """
    blobs: set[str] = set()
    chains: set[str] = set()
    todo: list[Any] = list(store.index_entries())
    while todo:
        desc = todo.pop()
        digest = desc.get("digest") if isinstance(desc, dict) else None
        if not isinstance(digest, str) or not is_digest(digest) or digest in blobs:
            continue
        blobs.add(digest)
        kind, size = str(desc.get("mediaType") or ""), desc.get("size")
        too_big = isinstance(size, int) and size > _JSON_MAX_BYTES
        if too_big or (kind and not kind.endswith("json")):
            continue  # a layer: a leaf
        try:
            doc = json.loads(store.read_blob(digest))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        if "schemaVersion" in doc:
            for key in ("manifests", "layers", "blobs"):
                children = doc.get(key)
                todo.extend(children if isinstance(children, list) else [])
            todo.extend(doc.get(key) for key in ("config", "subject"))
        elif kind in mt.CONFIG_TYPES:
            diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
            if all(isinstance(d, str) and is_digest(d) for d in diff_ids):
                chains.update(chain_ids(diff_ids))
    return blobs, chains


def _age(path: Path, now: float, *, newest: bool = False) -> float:
    """Seconds since ``path`` changed (with ``newest``: anything in its tree); 0 if gone."""
    try:
        mtime = path.lstat().st_mtime
        if newest and path.is_dir() and not path.is_symlink():
            for parent, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    with contextlib.suppress(FileNotFoundError):
                        mtime = max(mtime, os.lstat(os.path.join(parent, name)).st_mtime)
    except FileNotFoundError:
        return 0.0
    return now - mtime


def _tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of ``path`` itself)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size if path.is_file() else 0
    total = 0
    for parent, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(parent, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total
