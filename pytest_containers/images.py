"""The ``images`` factory: references resolved to images in the local store.

Pulls according to the pull policy (``always``, ``missing``, ``never``) and
the platform (``os/arch[/variant]``; default the host's), once per reference,
platform and session, and hands out the layer snapshots (base first) that a
container's overlay rootfs is made of. Also the store commands of
``pytest-containers image``: inspect, tag, rm, prune, push, save and load
(``inspect``, ``tag``, ``save`` also take an image ID or digest, see
:meth:`Images.find`). Works on a read-only store for everything that only reads
(see :mod:`pytest_containers.image.store`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .exceptions import ImageNotFoundError, InvalidReferenceError
from .image import archive
from .image.gc import PruneReport
from .image.locks import Lease
from .image.manifest import Platform, as_platform
from .image.pull import check_policy, pull
from .image.push import PushResult, push
from .image.reference import Reference
from .image.store import PRUNE_GRACE, Image, Store, chain_ids, default_root

__all__ = ["Images", "PullPolicy", "default_root"]

PullPolicy = Literal["always", "missing", "never"]
#: An image ID or digest as ``inspect``, ``tag``, ``save`` and ``push`` take it in place
#: of a name: ``sha256:`` and 4 to 64 hex digits, or all 64 hex digits alone.
_ID_RE = re.compile(r"sha256:[0-9a-f]{4,64}|[0-9a-f]{64}")


class Images:
    """Look up and pull images into ``store``; each (reference, platform) is resolved once.

    ``policy``: the default pull policy, ``always``, ``missing`` or ``never``.
    ``platform``: the factory's default platform, a :class:`Platform` or
    ``"os/arch[/variant]"`` (``None``: the host's). Raises
    ``InvalidOptionError`` for a bad policy or a malformed platform.
    """

    def __init__(
        self,
        store: Store,
        *,
        policy: PullPolicy = "missing",
        platform: Platform | str | None = None,
    ) -> None:
        self.store = store
        self.policy: PullPolicy = check_policy(policy)
        self.platform: Platform | None = as_platform(platform)
        self._resolved: dict[tuple[str, str], Image] = {}

    def _platform(self, platform: Platform | str | None) -> Platform | None:
        return as_platform(platform) or self.platform

    @staticmethod
    def _key(ref: Reference, platform: Platform | None) -> tuple[str, str]:
        wanted = (platform or Platform.host()).normalized()
        return str(ref), str(wanted)

    def pull(
        self,
        reference: str,
        *,
        policy: PullPolicy | None = None,
        platform: Platform | str | None = None,
    ) -> Image:
        """Pull ``reference`` (``"registry:5000/team/app:1.2"``) per ``policy``
        (default: the factory's) for ``platform`` (default: the factory's, else
        the host's). An index yields the manifest chosen for the platform (see
        :meth:`Index.select`); the image's ``reference`` is its store name
        (:func:`~pytest_containers.image.pull.store_reference`). A reference pinned
        by digest also finds a stored image of its repository by the registry's
        digest (see :func:`~pytest_containers.image.pull.pull`). Raises
        ``InvalidReferenceError`` (also for a ``reference`` that is not a ``str``),
        ``InvalidOptionError`` (policy, platform), registry errors,
        ``PlatformNotFoundError``, ``DigestMismatchError``, ``ImageNotFoundError``
        (policy ``never``), ``ImageError`` (a read-only store that lacks it)."""
        ref = Reference.parse(reference)
        wanted = self._platform(platform)
        chosen = self.policy if policy is None else check_policy(policy)
        image = pull(ref, self.store, policy=chosen, platform=wanted)
        self._resolved[self._key(ref, wanted)] = image
        return image

    def get(self, reference: str, *, platform: Platform | str | None = None) -> Image:
        """The image for ``reference`` and ``platform`` (as for :meth:`pull`, under the
        factory's policy), pulled at most once in this factory's life; raises as
        :meth:`pull`. With the policy ``never``, or ``missing`` and the image present,
        nothing is written: this works on a read-only store."""
        ref = Reference.parse(reference)
        wanted = self._platform(platform)
        image = self._resolved.get(self._key(ref, wanted))
        if image is None:
            image = self.pull(reference, platform=wanted)
        return image

    def snapshots(self, image: Image) -> list[Path]:
        """The image's layer snapshot dirs, base first (unpacked on first use).
        Take a :meth:`lease` first when they are to be used beyond this call."""
        return self.store.snapshots(image)

    def lease(self, image: Image) -> Lease:
        """Lease the snapshots of every layer of ``image`` (by chainID, whether or
        not unpacked yet), so that :meth:`prune` keeps them until the lease is
        released; see :meth:`Store.lease`. Raises ``StoreLockTimeoutError``."""
        return self.store.lease(chain_ids(image.config.diff_ids))

    # -- store commands ---------------------------------------------------------

    def _forget(self, reference: Reference | str) -> None:
        """Drop cached resolutions of the store name ``reference`` (it changed)."""
        name = str(reference if isinstance(reference, Reference) else Reference.parse(reference))
        for key in [k for k in self._resolved if k[0] == name]:
            del self._resolved[key]

    def find(self, reference: str) -> Image:
        """The stored image ``reference``: a name (``REPO[:TAG][@DIGEST]``), or an
        image ID or digest as docker takes them: ``sha256:`` and at least 4 hex
        digits (or 64 hex digits alone) matching the start of a stored image's
        manifest digest, registry digest (:attr:`Image.digests`) or config digest
        (the image ID); the first name, in ``index.json`` order, is returned.
        Raises ``ImageNotFoundError`` naming it, ``InvalidReferenceError``."""
        if isinstance(reference, str) and _ID_RE.fullmatch(reference):
            digest = reference if reference.startswith("sha256:") else f"sha256:{reference}"
            found = self.store.by_digest(digest)
            if not found:
                raise ImageNotFoundError(
                    f"no image with the digest or ID {reference} in the store {self.store.root}"
                    " (pytest-containers image ls lists the images, with their digests)",
                    reference=reference,
                )
            return found[0]
        return self.store.require(reference)

    def inspect(self, reference: str) -> dict[str, Any]:
        """The stored image ``reference`` (a name or an ID, see :meth:`find`) as a JSON
        object: ``reference`` (its full store name), ``digest`` (``sha256:<hex>``, the
        stored manifest's), ``registry_digest`` (what the registry knows it by: the
        index's digest for an image chosen from a multi-platform index, else the
        manifest digest the registry served; ``REPO@<it>`` pulls it), ``source_digest``
        (the registry's manifest digest when a Docker manifest was converted, else
        null), ``index_digest`` (the index it was chosen from, else null), ``id`` (the
        config digest), ``manifest`` and ``config`` (the documents), ``layers``
        (descriptors, base first), ``platform`` (``os/arch[/variant]``) and ``size``
        (bytes of manifest, config and layers as stored, i.e. compressed). Raises
        ``ImageNotFoundError``."""
        image = self.find(reference)
        manifest = self.store.read_blob(image.digest)
        size = len(manifest) + image.manifest.config.size + sum(d.size for d in image.layers)
        return {
            "reference": str(image.reference),
            "digest": image.digest,
            "registry_digest": image.registry_digest,
            "source_digest": image.source_digest,
            "index_digest": image.index_digest,
            "id": image.manifest.config.digest,
            "manifest": json.loads(manifest),
            "config": image.config.raw,
            "layers": [layer.to_dict() for layer in image.layers],
            "platform": str(image.config.platform),
            "size": size,
        }

    def tag(self, source: str, target: str) -> Image:
        """Name the stored image ``source`` (a name or an ID, see :meth:`find`) also
        ``target`` (replacing what ``target`` named); return it under its new name.
        The registry digests recorded for ``source`` go with it. A ``target`` with a
        digest must have one of the image's (:attr:`Image.digests`). Raises
        ``ImageNotFoundError`` naming ``source``, ``InvalidReferenceError`` (a
        malformed ``target``, or one whose digest is not the image's),
        ``ImageError`` (a read-only store)."""
        image = self.find(source)
        target_ref = Reference.parse(target)
        if target_ref.digest is not None and target_ref.digest not in image.digests:
            raise InvalidReferenceError(
                f"cannot tag {source} as {target}: {target_ref.digest} is not a digest of that"
                f" image ({' or '.join(image.digests)}); give a name without a digest, or"
                " with the image's",
                reference=target,
            )
        self.store.tag(
            target_ref,
            image.digest,
            source_digest=image.source_digest,
            index_digest=image.index_digest,
        )
        self._forget(target_ref)
        return self.store.require(target_ref)

    def rm(self, reference: str) -> None:
        """Remove the name ``reference``; blobs and snapshots stay until :meth:`prune`.
        Raises ``ImageNotFoundError`` naming it."""
        self.store.remove(reference)
        self._forget(reference)

    def prune(self, *, grace: float = PRUNE_GRACE) -> PruneReport:
        """Remove the blobs and snapshots that no name reaches and no container
        leases (except those younger than ``grace`` seconds; ``0``: all of them, safe
        only while no pull or load runs on the store), temp files of writers that
        are gone and free lock files; see :meth:`Store.prune`."""
        return self.store.prune(grace=grace)

    def push(
        self, reference: str, destination: str | None = None, *, chunk_bytes: int | None = None
    ) -> PushResult:
        """Push the stored image ``reference`` (a name; with a ``destination``, also
        an ID, see :meth:`find`) to ``destination`` (default: its own name); see
        :func:`pytest_containers.image.push.push` (and what it refuses)."""
        source: str | Reference = reference
        if destination is not None:
            source = self.find(reference).reference
        return push(source, self.store, destination, chunk_bytes=chunk_bytes)

    def save(self, reference: str, file: Path | str | BinaryIO) -> Path | None:
        """Write the stored image ``reference`` (a name or an ID, see :meth:`find`) as
        an OCI archive to ``file``: a path (returned; written whole or not at all,
        see :func:`pytest_containers.image.archive.save`) or a binary stream such as
        ``sys.stdout.buffer`` (``None`` returned; see
        :func:`pytest_containers.image.archive.write`)."""
        image = self.find(reference)
        if isinstance(file, (str, Path)):
            return archive.save(self.store, image, file)
        archive.write(self.store, image, file)
        return None

    def load(self, file: Path | str, reference: str | None = None) -> list[Image]:
        """Load the images of the OCI archive ``file`` (its one image named
        ``reference`` when given); see :func:`pytest_containers.image.archive.load`."""
        images = archive.load(self.store, file, reference)
        for image in images:
            self._forget(image.reference)
        return images
