"""The ``images`` factory: references resolved to images in the local store.

Pulls according to the pull policy (``always``, ``missing``, ``never``), once
per reference and session, and hands out the layer snapshots (base first)
that a container's overlay rootfs is made of.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from .image.pull import pull
from .image.reference import Reference
from .image.store import Image, Store, default_root

__all__ = ["Images", "PullPolicy", "default_root"]

PullPolicy = Literal["always", "missing", "never"]


class Images:
    """Look up and pull images into ``store``; each reference is resolved once."""

    def __init__(self, store: Store, *, policy: PullPolicy = "missing") -> None:
        self.store = store
        self.policy: PullPolicy = policy
        self._resolved: dict[str, Image] = {}

    def pull(self, reference: str, *, policy: PullPolicy | None = None) -> Image:
        """Pull ``reference`` (``"registry:5000/team/app:1.2"``) per ``policy``
        (default: the factory's). Raises ``InvalidReferenceError``, registry
        errors, ``DigestMismatchError``, ``ImageNotFoundError`` (policy ``never``)."""
        ref = Reference.parse(reference)
        image = pull(ref, self.store, policy=policy or self.policy)
        self._resolved[str(ref)] = image
        return image

    def get(self, reference: str) -> Image:
        """The image for ``reference``, pulled at most once in this factory's life."""
        key = str(Reference.parse(reference))
        image = self._resolved.get(key)
        if image is None:
            image = self.pull(reference)
        return image

    def snapshots(self, image: Image) -> list[Path]:
        """The image's layer snapshot dirs, base first (unpacked on first use)."""
        return self.store.snapshots(image)
