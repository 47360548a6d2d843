"""Garbage collection of the image store: :func:`prune`, behind :meth:`Store.prune
<pytest_containers.image.store.Store.prune>`.

Mark: the closure of ``index.json`` (:func:`reachable`). Sweep, under the
index lock: unreachable blobs and snapshots past a grace period, except
snapshots that a container leases (:meth:`Store.lease
<pytest_containers.image.store.Store.lease>`) or that are being unpacked;
temp files of writers that are gone; and lock files that nobody holds (blob
and unpack locks; lease files of snapshots that no longer exist), removed as
:func:`pytest_containers.image.locks.remove_if_free` does.

Temp files and their locks: a blob's temp file ``tmp/<hex>-*`` is only written
under that blob's lock (:meth:`Store.ingest
<pytest_containers.image.store.Store.ingest>`), and an unpack's temp directory
``snapshots/.tmp-<hex>-*`` under that snapshot's unpack lock. So when the lock
is free, the writer is gone (a SIGKILLed pull) and the temp entry goes at once,
whatever its age; the lock is held here while it is removed, so no new writer
starts meanwhile. Other temp entries (archives being loaded, entries of older
versions) go once nothing in them changed for ``stale_temp`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_containers.image import locks
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import is_digest
from pytest_containers.image.snapshots import chain_ids, rmtree
from pytest_containers.image.store import (
    BLOB_TEMP_RE,
    PRUNE_GRACE,
    PRUNE_STALE_TEMP,
    Store,
)

#: Largest JSON blob (manifest, index, config) that prune reads, in bytes.
_JSON_MAX_BYTES = 4 * 1024 * 1024
#: Name of an unpack's temp directory under ``snapshots/``: ``.tmp-<hex of chainID>-*``.
_SNAPSHOT_TEMP_RE = re.compile(r"\.tmp-([0-9a-f]{64})-.*")


@dataclass
class PruneReport:
    """What :func:`prune` did and what it kept, and why.

    Removed: ``blobs`` (digests, ``sha256:<hex>``), ``snapshots`` (chainIDs),
    ``temp`` (paths of temp files and directories of writers that are gone),
    ``locks`` (lock and lease files found unheld; those of a removed snapshot go
    with it, unlisted); ``freed_bytes``: sizes of the removed files, in bytes.

    Kept although no name reaches them: ``in_use``, chainIDs of snapshots a
    container leases; ``young_blobs`` and ``young_snapshots``, those younger than
    ``grace`` seconds (a pull or load may be about to name them), together
    ``young_bytes`` bytes. Temp entries kept: ``temp_in_use``, being written (their
    lock is held); ``temp_young``, with no lock to tell and changed within the last
    ``stale_temp`` seconds.
    """

    blobs: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    temp: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    in_use: list[str] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)
    young_blobs: list[str] = field(default_factory=list)
    young_snapshots: list[str] = field(default_factory=list)
    young_bytes: int = 0
    temp_in_use: list[Path] = field(default_factory=list)
    temp_young: list[Path] = field(default_factory=list)
    grace: float = PRUNE_GRACE
    stale_temp: float = PRUNE_STALE_TEMP


def prune(
    store: Store, *, grace: float = PRUNE_GRACE, stale_temp: float = PRUNE_STALE_TEMP
) -> PruneReport:
    """Remove from ``store`` the blobs and snapshots that no name reaches and no
    container leases, stale temp files, and the lock files nobody holds.

    Reachable: :func:`reachable`. Unreachable blobs and snapshots whose mtime is
    older than ``grace`` seconds are removed (younger ones are counted in the
    report; ``grace=0`` removes them too, which is safe only while no pull or
    load runs on the store); a snapshot only when nobody holds
    its unpack lock (:meth:`Store.snapshot_lock_path`) nor a lease on it
    (:meth:`Store.lease_path`; both taken here with ``LOCK_EX|LOCK_NB``), renamed
    to ``.tmp-*`` first so that no half-deleted snapshot keeps its name; a leased
    one is listed in ``in_use``. Temp entries: those of a blob or snapshot
    (``tmp/<hex>-*``, ``snapshots/.tmp-<hex>-*``) go as soon as that blob's or
    snapshot's lock is free (see the module docstring); others (``tmp/*``,
    ``snapshots/.tmp-*``, ``oci/.tmp-*``) when nothing in them changed for
    ``stale_temp`` seconds.
    Lock files (``locks/blob-*``, ``locks/snapshot-*``, and ``leases/*`` of
    snapshots that do not exist) go when nobody holds them.

    The index lock is held throughout, so no name appears meanwhile; a
    concurrent pull writes its blobs (or, via :meth:`Store.has_blob`, refreshes
    reused ones) before naming them, and they are younger than ``grace``; a
    container leases its snapshots before they are unpacked or reused. Raises
    :class:`StoreLockTimeoutError` when the index lock is not free in time.
    """
    now = time.time()
    report = PruneReport(grace=grace, stale_temp=stale_temp)
    with store.index_lock():
        blobs, chains = reachable(store)
        for path in sorted(store.blobs_dir.iterdir()):
            digest = f"sha256:{path.name}"
            if not is_digest(digest) or digest in blobs:
                continue
            size = path.stat().st_size
            if _age(path, now) <= grace:
                report.young_blobs.append(digest)
                report.young_bytes += size
                continue
            path.unlink(missing_ok=True)
            report.blobs.append(digest)
            report.freed_bytes += size
        for path in sorted(store.snapshots_dir.iterdir()):
            chain_id = f"sha256:{path.name}"
            if not is_digest(chain_id) or chain_id in chains:
                continue
            if _age(path, now) <= grace:
                report.young_snapshots.append(chain_id)
                report.young_bytes += _tree_bytes(path)
                continue
            _remove_snapshot(store, chain_id, report)
        for path in sorted(store.tmp_dir.iterdir()):
            found = BLOB_TEMP_RE.fullmatch(path.name)
            lock = store.blob_lock_path(f"sha256:{found[1]}") if found else None
            _remove_temp(path, lock, now, report)
        for path in sorted(store.snapshots_dir.glob(".tmp-*")):
            found = _SNAPSHOT_TEMP_RE.fullmatch(path.name)
            lock = store.snapshot_lock_path(f"sha256:{found[1]}") if found else None
            _remove_temp(path, lock, now, report)
        for path in sorted(store.layout.glob(".tmp-*")):
            _remove_temp(path, None, now, report)
        _remove_free_locks(store, report)
    return report


def _remove_temp(path: Path, lock: Path | None, now: float, report: PruneReport) -> None:
    """Remove the temp entry ``path`` if its writer is gone: when ``lock`` (the lock
    its writer holds) is free, held here meanwhile; without a ``lock``, when nothing
    in it changed for ``report.stale_temp`` seconds. Else list it as kept."""
    fd = None
    if lock is not None:
        fd = locks.try_lock(lock)
        if fd is None:
            report.temp_in_use.append(path)
            return
    try:
        if not os.path.lexists(path):  # renamed into place meanwhile, or removed
            return
        if lock is None and _age(path, now, newest=True) <= report.stale_temp:
            report.temp_young.append(path)
            return
        report.freed_bytes += _tree_bytes(path)
        if path.is_dir() and not path.is_symlink():
            rmtree(path)
        else:
            path.unlink(missing_ok=True)
        report.temp.append(path)
    finally:
        if fd is not None:
            locks.unlock(fd)


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
