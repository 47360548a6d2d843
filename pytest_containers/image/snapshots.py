"""Layer snapshots of the image store: one directory per layer, keyed by chainID,
unpacked once (across processes, under the snapshot's lock) over the snapshots
below it, and shared read-only by every container of every image that has it.
Used by :meth:`Store.snapshots <pytest_containers.image.store.Store.snapshots>`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_containers.exceptions import ContainersError, DigestMismatchError
from pytest_containers.image import locks
from pytest_containers.image.digest import digest_hex, digest_of
from pytest_containers.image.manifest import Descriptor
from pytest_containers.image.unpack import rmtree

if TYPE_CHECKING:
    from pytest_containers.image.store import Store


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chainID of each layer, base first (image-spec ``config.md``):
    ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))``."""
    result: list[str] = []
    for diff_id in diff_ids:
        if result:
            diff_id = digest_of(f"{result[-1]} {diff_id}".encode())
        result.append(diff_id)
    return result


def unpack_snapshot(
    store: Store,
    layer: Descriptor,
    diff_id: str,
    chain_id: str,
    parents: list[Path],
    *,
    timeout: float,
) -> Path:
    """The snapshot of ``layer`` (chainID ``chain_id``) in ``store``, unpacked now
    over ``parents`` (the snapshots below it, base first) unless it exists, waiting
    up to ``timeout`` seconds for another process unpacking it; see
    :meth:`Store.snapshots <pytest_containers.image.store.Store.snapshots>` for the
    locking, the checks and the errors."""
    final = store.snapshot_path(chain_id)
    if final.is_dir():
        return final
    from pytest_containers.image.unpack import unpack_layer

    key = digest_hex(chain_id)
    what = f"another process to unpack snapshot {chain_id} in the store {store.root}"
    lock_path = store.snapshot_lock_path(chain_id)
    doing = f"unpack layer {layer.digest} (snapshot {chain_id})"
    store.check_writable(doing)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                locks.exclusive(lock_path, timeout=timeout, what=what, digest=chain_id)
            )
            if final.is_dir():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=store.snapshots_dir))
        except OSError as exc:
            if isinstance(exc, ContainersError):
                raise
            raise store.write_error(doing, exc) from exc
        try:
            with store.blob_path(layer.digest).open("rb") as src:
                actual = unpack_layer(
                    src, tmp, layer.media_type, digest=layer.digest, parents=list(parents)
                )
            if actual != diff_id:
                raise DigestMismatchError(
                    f"layer {layer.digest} unpacks to diffID {actual}, config says {diff_id}",
                    digest=diff_id,
                    actual=actual,
                    size=layer.size,
                )
            os.rename(tmp, final)
        except BaseException:
            rmtree(tmp)
            raise
    return final
