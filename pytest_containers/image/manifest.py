"""Image manifests, indexes, descriptors, platforms and image configs.

Implements the JSON documents of the OCI image spec (``descriptor.md``,
``manifest.md``, ``image-index.md``, ``config.md``) and their Docker v2
schema 2 equivalents, which share the same shape. Each type is a frozen
dataclass built by ``from_json(bytes)``; malformed documents raise
:class:`~pytest_containers.exceptions.ImageError` (or a subclass).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from pytest_containers.exceptions import (
    ImageError,
    PlatformNotFoundError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import validate_digest

# Normalization of uname/Go architecture names (containerd ``platforms/database.go``).
_ARCH_ALIASES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


def _load(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


@dataclass(frozen=True)
class Platform:
    """An image platform (image-index.md ``platform``): ``os``/``architecture``[/``variant``].

    Architecture and variant are normalized to Go/OCI names on construction by
    :meth:`normalized` (``x86_64`` -> ``amd64``; ``aarch64`` -> ``arm64`` ``v8``).
    """

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``, e.g. ``linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Platform:
        return cls(
            os=str(doc.get("os", "")),
            architecture=str(doc.get("architecture", "")),
            variant=str(doc.get("variant", "") or ""),
            os_version=str(doc.get("os.version", "") or ""),
        )

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform, e.g. ``linux/amd64`` or ``linux/arm64/v8``."""
        machine = _platform.machine().lower()
        return cls(_platform.system().lower() or "linux", machine).normalized()

    def normalized(self) -> Platform:
        """Architecture names as Go spells them; ``arm64`` without variant becomes ``v8``."""
        arch, default_variant = _ARCH_ALIASES.get(self.architecture, (self.architecture, ""))
        variant = self.variant or default_variant
        if arch == "arm64" and variant == "8":
            variant = "v8"
        return Platform(self.os.lower(), arch, variant, self.os_version)

    def matches(self, other: Platform) -> bool:
        """Same os, architecture and (normalized) variant; ``unknown`` never matches."""
        a, b = self.normalized(), other.normalized()
        if "unknown" in (a.os, a.architecture, b.os, b.architecture):
            return False
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (descriptor.md): what, which digest, how many bytes.

    ``digest`` is ``sha256:<64 hex>``; ``size`` is in bytes.
    """

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, doc: Any) -> Descriptor:
        if not isinstance(doc, dict):
            raise ImageError(f"descriptor is not a JSON object: {doc!r}")
        size = doc.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"descriptor has no valid size: {doc!r}")
        platform = doc.get("platform")
        return cls(
            media_type=str(doc.get("mediaType", "")),
            digest=validate_digest(doc.get("digest", "")),
            size=size,
            annotations=dict(doc.get("annotations") or {}),
            platform=Platform.from_dict(platform) if isinstance(platform, dict) else None,
            urls=tuple(doc.get("urls") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this descriptor (for ``index.json``)."""
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        if self.platform is not None:
            doc["platform"] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                doc["platform"]["variant"] = self.platform.variant
        if self.urls:
            doc["urls"] = list(self.urls)
        return doc


def _check_media_type(doc: dict[str, Any], declared: str | None, allowed: frozenset[str]) -> str:
    media_type = declared or doc.get("mediaType") or ""
    if media_type in mt.SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise UnsupportedMediaTypeError(
            f"Docker schema 1 manifests are not supported ({media_type or 'schemaVersion 1'})",
            media_type=media_type or mt.DOCKER_SCHEMA1_MANIFEST,
        )
    if media_type not in allowed:
        raise UnsupportedMediaTypeError(
            f"unsupported media type {media_type!r}; expected one of {sorted(allowed)}",
            media_type=media_type,
        )
    return media_type


@dataclass(frozen=True)
class Manifest:
    """An image manifest (manifest.md): a config descriptor and layers, base first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: bytes | str, media_type: str | None = None) -> Manifest:
        """Parse a manifest; ``media_type`` is the HTTP ``Content-Type`` if known.

        Raises :class:`UnsupportedMediaTypeError` for schema 1 or non-manifest
        types, :class:`ImageError` for malformed JSON or descriptors.
        """
        doc = _load(data, "manifest")
        if media_type and media_type not in mt.MANIFEST_TYPES and doc.get("mediaType"):
            media_type = None  # registries may answer a generic Content-Type
        kind = _check_media_type(doc, media_type, mt.MANIFEST_TYPES | {""})
        kind = kind or mt.OCI_MANIFEST  # OCI allows omitting mediaType
        if "config" not in doc:
            raise ImageError("manifest has no config descriptor")
        layers = doc.get("layers") or []
        if not isinstance(layers, list):
            raise ImageError("manifest layers is not a list")
        return cls(
            media_type=kind,
            config=Descriptor.from_dict(doc["config"]),
            layers=tuple(Descriptor.from_dict(layer) for layer in layers),
            annotations=dict(doc.get("annotations") or {}),
        )


@dataclass(frozen=True)
class Index:
    """An image index or Docker manifest list (image-index.md)."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: bytes | str, media_type: str | None = None) -> Index:
        doc = _load(data, "image index")
        kind = _check_media_type(doc, media_type or doc.get("mediaType"), mt.INDEX_TYPES | {""})
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise ImageError("image index has no manifests list")
        return cls(
            media_type=kind or mt.OCI_INDEX,
            manifests=tuple(Descriptor.from_dict(m) for m in manifests),
            annotations=dict(doc.get("annotations") or {}),
        )

    def select(self, platform: Platform | None = None) -> Descriptor:
        """The first entry for ``platform`` (default: :meth:`Platform.host`).

        Attestation entries (``unknown/unknown`` or annotated
        ``vnd.docker.reference.type``) are never chosen. Entries without a
        platform are chosen only when the index has exactly one entry.
        Raises :class:`PlatformNotFoundError` (fields ``platform``,
        ``available``: list of ``os/arch[/variant]`` strings).
        """
        wanted = (platform or Platform.host()).normalized()
        candidates = [
            d
            for d in self.manifests
            if _ATTESTATION_ANNOTATION not in d.annotations
            and d.media_type in (mt.MANIFEST_TYPES | mt.INDEX_TYPES | {""})
        ]
        for desc in candidates:
            if desc.platform is not None and wanted.matches(desc.platform):
                return desc
        if len(self.manifests) == 1 and self.manifests[0].platform is None:
            return self.manifests[0]
        available = [str(d.platform.normalized()) for d in self.manifests if d.platform]
        raise PlatformNotFoundError(
            f"no image for platform {wanted} in index; available: {', '.join(available) or 'none'}",
            platform=str(wanted),
            available=available,
        )


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index, dispatching on ``media_type`` or the document's own.

    Raises :class:`UnsupportedMediaTypeError` for schema 1 and unknown types.
    """
    doc = _load(data, "manifest")
    declared = doc.get("mediaType") or ""
    if media_type in mt.INDEX_TYPES or declared in mt.INDEX_TYPES:
        return Index.from_json(data, declared or media_type)
    if media_type in mt.MANIFEST_TYPES or declared in mt.MANIFEST_TYPES:
        return Manifest.from_json(data, declared or media_type)
    if not declared and "manifests" in doc and "config" not in doc:
        return Index.from_json(data, mt.OCI_INDEX)
    if not declared and "config" in doc and doc.get("schemaVersion") == 2:
        return Manifest.from_json(data, mt.OCI_MANIFEST)
    _check_media_type(doc, declared or media_type, mt.MANIFEST_TYPES | mt.INDEX_TYPES)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration (config.md): how to run the image and its diffIDs.

    ``diff_ids``: ``sha256:<hex>`` of each *uncompressed* layer, base first.
    ``env``: ``KEY=value`` strings. ``raw``: the whole parsed document.
    """

    architecture: str
    os: str
    variant: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    diff_ids: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageConfig:
        doc = _load(data, "image config")
        conf = doc.get("config") or {}
        rootfs = doc.get("rootfs") or {}
        if rootfs.get("type", "layers") != "layers":
            raise ImageError(f"image config rootfs type {rootfs.get('type')!r} is not 'layers'")
        return cls(
            architecture=str(doc.get("architecture", "")),
            os=str(doc.get("os", "")),
            variant=str(doc.get("variant", "") or ""),
            entrypoint=tuple(conf.get("Entrypoint") or ()),
            cmd=tuple(conf.get("Cmd") or ()),
            env=tuple(conf.get("Env") or ()),
            working_dir=str(conf.get("WorkingDir") or ""),
            user=str(conf.get("User") or ""),
            labels=dict(conf.get("Labels") or {}),
            diff_ids=tuple(validate_digest(d) for d in rootfs.get("diff_ids") or ()),
            raw=doc,
        )

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant).normalized()


_DOCKER_TO_OCI = {
    mt.DOCKER_MANIFEST: mt.OCI_MANIFEST,
    mt.DOCKER_CONFIG: mt.OCI_CONFIG,
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    mt.DOCKER_LAYER_FOREIGN_GZIP: mt.OCI_LAYER_NONDIST_GZIP,
}


def docker_to_oci(data: bytes) -> bytes:
    """Rewrite a Docker v2 schema 2 manifest as an OCI image manifest (as skopeo does).

    Only media types change: config and layer digests and sizes stay, so every
    blob is shared. The result is new bytes with a new digest; an OCI manifest
    is returned unchanged. Raises :class:`UnsupportedMediaTypeError` for other
    types.
    """
    doc = _load(data, "manifest")
    if doc.get("mediaType") in (mt.OCI_MANIFEST, None) and "config" in doc:
        return data
    _check_media_type(doc, None, frozenset({mt.DOCKER_MANIFEST}))

    def convert(desc: dict[str, Any]) -> dict[str, Any]:
        out = dict(desc)
        kind = desc.get("mediaType", "")
        if kind not in _DOCKER_TO_OCI:
            raise UnsupportedMediaTypeError(
                f"cannot convert media type {kind!r} to OCI", media_type=kind
            )
        out["mediaType"] = _DOCKER_TO_OCI[kind]
        return out

    oci: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": convert(doc["config"]),
        "layers": [convert(layer) for layer in doc.get("layers") or []],
    }
    if doc.get("annotations"):
        oci["annotations"] = doc["annotations"]
    return json.dumps(oci, separators=(",", ":")).encode()
