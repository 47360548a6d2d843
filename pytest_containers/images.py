"""The ``images`` factory: references resolved to images in the local store.

Pulls according to the pull policy (``always``, ``missing``, ``never``) and
the platform (``os/arch[/variant]``; default the host's), once per reference,
platform and session, and hands out the layer snapshots (base first) that a
container's overlay rootfs is made of. Also the store commands of
``pytest-containers image``: inspect, tag, rm, prune, push, save and load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .image import archive
from .image.gc import PruneReport
from .image.locks import Lease
from .image.manifest import Platform, as_platform
from .image.pull import pull
from .image.push import PushResult, push
from .image.reference import Reference
from .image.store import Image, Store, chain_ids, default_root

__all__ = ["Images", "PullPolicy", "default_root"]

PullPolicy = Literal["always", "missing", "never"]


class Images:
    """Look up and pull images into ``store``; each (reference, platform) is resolved once.

    ``platform``: the factory's default platform, a :class:`Platform` or
    ``"os/arch[/variant]"`` (``None``: the host's). Raises
    ``InvalidOptionError`` for a malformed platform.
    """

    def __init__(
        self,
        store: Store,
        *,
        policy: PullPolicy = "missing",
        platform: Platform | str | None = None,
    ) -> None:
        self.store = store
        self.policy: PullPolicy = policy
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
        (:func:`~pytest_containers.image.pull.store_reference`). Raises
        ``InvalidReferenceError``, ``InvalidOptionError`` (platform), registry
        errors, ``PlatformNotFoundError``, ``DigestMismatchError``,
        ``ImageNotFoundError`` (policy ``never``)."""
        ref = Reference.parse(reference)
        wanted = self._platform(platform)
        image = pull(ref, self.store, policy=policy or self.policy, platform=wanted)
        self._resolved[self._key(ref, wanted)] = image
        return image

    def get(self, reference: str, *, platform: Platform | str | None = None) -> Image:
        """The image for ``reference`` and ``platform`` (as for :meth:`pull`),
        pulled at most once in this factory's life."""
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

    def inspect(self, reference: str) -> dict[str, Any]:
        """The stored image ``reference`` as a JSON object: ``reference`` (its full
        store name), ``digest`` and ``source_digest`` (``sha256:<hex>``; the
        registry's digest when a Docker manifest was converted, else null),
        ``manifest`` and ``config`` (the documents), ``layers`` (descriptors, base
        first), ``platform`` (``os/arch[/variant]``) and ``size`` (bytes of manifest,
        config and layers as stored, i.e. compressed). Raises ``ImageNotFoundError``."""
        image = self.store.require(reference)
        manifest = self.store.read_blob(image.digest)
        size = len(manifest) + image.manifest.config.size + sum(d.size for d in image.layers)
        return {
            "reference": str(image.reference),
            "digest": image.digest,
            "source_digest": image.source_digest,
            "manifest": json.loads(manifest),
            "config": image.config.raw,
            "layers": [layer.to_dict() for layer in image.layers],
            "platform": str(image.config.platform),
            "size": size,
        }

    def tag(self, source: str, target: str) -> Image:
        """Name the stored image ``source`` also ``target`` (replacing what ``target``
        named); return it under its new name. Raises ``ImageNotFoundError`` naming
        ``source``, ``InvalidReferenceError``."""
        image = self.store.require(source)
        self.store.tag(target, image.digest, source_digest=image.source_digest)
        self._forget(target)
        return self.store.require(target)

    def rm(self, reference: str) -> None:
        """Remove the name ``reference``; blobs and snapshots stay until :meth:`prune`.
        Raises ``ImageNotFoundError`` naming it."""
        self.store.remove(reference)
        self._forget(reference)

    def prune(self) -> PruneReport:
        """Remove the blobs and snapshots that no name reaches and no container
        leases, stale temp files and free lock files; see :meth:`Store.prune`."""
        return self.store.prune()

    def push(
        self, reference: str, destination: str | None = None, *, chunk_bytes: int | None = None
    ) -> PushResult:
        """Push the stored image ``reference`` to ``destination`` (default: its own
        name); see :func:`pytest_containers.image.push.push`."""
        return push(reference, self.store, destination, chunk_bytes=chunk_bytes)

    def save(self, reference: str, file: Path | str) -> Path:
        """Write the stored image ``reference`` to ``file`` as an OCI archive; see
        :func:`pytest_containers.image.archive.save`."""
        return archive.save(self.store, reference, file)

    def load(self, file: Path | str, reference: str | None = None) -> list[Image]:
        """Load the images of the OCI archive ``file`` (its one image named
        ``reference`` when given); see :func:`pytest_containers.image.archive.load`."""
        images = archive.load(self.store, file, reference)
        for image in images:
            self._forget(image.reference)
        return images
