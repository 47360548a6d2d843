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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_containers.exceptions import (
    ImageError,
    InvalidOptionError,
    PlatformNotFoundError,
    UnsupportedMediaTypeError,
)
from pytest_containers.image import mediatypes as mt
from pytest_containers.image.digest import validate_digest

# Architecture names as uname -m, Debian and Go spell them -> (Go name, forced
# variant or None to keep the given one). containerd ``platforms/database.go``.
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5l": ("arm", "v5"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "386": ("386", ""),
}
#: Go's GOOS and GOARCH values (``go/build/syslist.go``), the names image indexes use.
KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd"
    " plan9 solaris wasip1 windows zos".split()
)
KNOWN_ARCHITECTURES = frozenset(
    "386 amd64 amd64p32 arm armbe arm64 arm64be loong64 mips mipsle mips64 mips64le"
    " mips64p32 mips64p32le ppc ppc64 ppc64le riscv riscv64 s390 s390x sparc sparc64 wasm".split()
)
_COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ARM64_VARIANT_RE = re.compile(r"v(\d+)(?:\.(\d+))?")
_ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
#: binfmt_misc handlers (qemu-user-static) by the QEMU name of the architecture they run.
BINFMT_MISC_DIR = Path("/proc/sys/fs/binfmt_misc")
_QEMU_ARCHITECTURES = {
    "x86_64": "amd64",
    "i386": "386",
    "aarch64": "arm64",
    "arm": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64el": "mips64le",
    "loongarch64": "loong64",
}
# x86-64 micro-architecture levels (psABI): the /proc/cpuinfo flags each adds.
_AMD64_LEVEL_FLAGS = (
    (2, {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    (3, {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    (4, {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def load_json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object; ``ImageError`` naming ``what`` otherwise."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


def _level(variant: str, default: int) -> int | None:
    """``"v7"`` or ``"7"`` -> 7; ``""`` -> ``default``; anything else ``None``."""
    if not variant:
        return default
    text = variant[1:] if variant.startswith("v") else variant
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class Platform:
    """An image platform (image-index.md ``platform``): ``os``/``architecture``[/``variant``].

    Names are Go's (``GOOS``/``GOARCH``); :meth:`normalized` maps other
    spellings to them as containerd's ``platforms.Normalize`` does
    (``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``, ``armhf`` -> ``arm``
    ``v7``), with one difference: ``arm64`` without a variant is ``v8``, its
    default, spelled out. ``os_version`` and ``os_features`` (``os.version``,
    ``os.features``) are kept but play no part in matching (they only mean
    something for Windows images).
    """

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``[os/]arch[/variant]`` and normalize it.

        ``linux/arm64``, ``linux/arm64/v8``, ``arm64`` and ``arm/v7`` (os ``linux``),
        ``linux/aarch64`` (-> ``linux/arm64/v8``), ``x86_64`` (-> ``linux/amd64``),
        ``armhf`` (-> ``linux/arm/v7``), ``armel`` (-> ``linux/arm/v6``).
        The os and architecture must be Go names or known aliases.
        Raises :class:`InvalidOptionError` (a ``ValueError``; fields
        ``option="platform"``, ``value``) naming the value and what is wrong.
        """

        def fail(why: str) -> InvalidOptionError:
            return InvalidOptionError(
                f"invalid platform {text!r}: {why} (expected [os/]arch[/variant],"
                " e.g. linux/amd64, linux/arm64/v8, arm/v7)",
                option="platform",
                value=text,
            )

        if not isinstance(text, str):
            raise fail("not a string")
        parts = text.strip().split("/")
        if len(parts) > 3:
            raise fail("more than three '/'-separated parts")
        for part in parts:
            if not _COMPONENT_RE.fullmatch(part):
                what = "an empty part" if not part else f"bad characters in {part!r}"
                raise fail(what)
        first = parts[0].lower()
        if len(parts) == 1 and first in KNOWN_OS:
            raise fail(f"{parts[0]!r} is an operating system; add the architecture")
        if len(parts) < 3 and first not in KNOWN_OS and first != "macos":
            if first in KNOWN_ARCHITECTURES or first in _ARCH_ALIASES:
                parts.insert(0, "linux")  # arch or arch/variant (containerd's Parse)
            elif len(parts) == 1:
                raise fail(f"unknown architecture {parts[0]!r}")
        os_name, arch = parts[0].lower(), parts[1].lower()
        if os_name not in KNOWN_OS and os_name != "macos":
            raise fail(f"unknown operating system {parts[0]!r}")
        if arch not in KNOWN_ARCHITECTURES and arch not in _ARCH_ALIASES:
            raise fail(f"unknown architecture {parts[1]!r}")
        return cls(os_name, arch, parts[2] if len(parts) == 3 else "").normalized()

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Platform:
        features = doc.get("os.features") or ()
        return cls(
            os=str(doc.get("os", "")),
            architecture=str(doc.get("architecture", "")),
            variant=str(doc.get("variant", "") or ""),
            os_version=str(doc.get("os.version", "") or ""),
            os_features=tuple(str(f) for f in features) if isinstance(features, list) else (),
        )

    def to_dict(self) -> dict[str, Any]:
        """The image-index.md ``platform`` object (empty fields left out)."""
        doc: dict[str, Any] = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            doc["variant"] = self.variant
        if self.os_version:
            doc["os.version"] = self.os_version
        if self.os_features:
            doc["os.features"] = list(self.os_features)
        return doc

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform, e.g. ``linux/amd64`` or ``linux/arm64/v8``.

        No amd64 micro-architecture level (``v2``..``v4``) is added: a default
        pull picks the plain ``amd64`` entry, as containerd does.
        """
        machine = _platform.machine().lower()
        return cls(_platform.system().lower() or "linux", machine).normalized()

    def normalized(self) -> Platform:
        """Go's names, lowercase: architecture aliases resolved; ``amd64/v1`` ->
        ``amd64``; ``arm64`` (or ``arm64/8``) -> ``arm64/v8``; ``arm`` -> ``arm/v7``;
        ``arm/6`` -> ``arm/v6``; ``386`` has no variant; ``macos`` -> ``darwin``."""
        os_name = self.os.lower()
        if os_name == "macos":
            os_name = "darwin"
        arch, variant = self.architecture.lower(), self.variant.lower()
        arch, forced = _ARCH_ALIASES.get(arch, (arch, None))
        if forced is not None:
            variant = forced
        if arch == "amd64" and variant == "v1":
            variant = ""
        elif arch == "arm64" and variant in ("", "8"):
            variant = "v8"
        elif arch == "arm" and variant in ("", "5", "6", "7", "8"):
            variant = f"v{variant or 7}"
        return Platform(os_name, arch, variant, self.os_version, self.os_features)

    def compatible(self) -> tuple[Platform, ...]:
        """The platforms a request for this one accepts, best first (containerd
        ``platforms.Only``): itself; then lower variants of its architecture
        (``amd64/v3``: ``v2``, ``amd64``; ``arm/v7``: ``v6``, ``v5``;
        ``arm64/v8.2``: ``v8.1``, ``v8``; ``arm64/v9.x``: ``v9.(x-1)``..``v9``,
        ``v8.(x+5)``..``v8``); then the 32-bit architecture the CPU also runs
        (``amd64``: ``386``; ``arm64``: ``arm/v8``..``arm/v5``). A plain
        ``amd64`` accepts no ``v2``..``v4`` image, an ``arm/v6`` no ``v7``."""
        me = self.normalized()
        os_name = me.os

        def plat(arch: str, variant: str = "") -> Platform:
            return Platform(os_name, arch, variant)

        vector = [plat(me.architecture, me.variant)]
        if me.architecture == "amd64":
            level = _level(me.variant, 1)
            if level is not None:
                vector += [plat("amd64", f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)]
            vector.append(plat("386"))
        elif me.architecture == "arm":
            level = _level(me.variant, 7)
            if level is not None:
                vector += [plat("arm", f"v{n}") for n in range(level - 1, 4, -1)]
        elif me.architecture == "arm64":
            found = _ARM64_VARIANT_RE.fullmatch(me.variant)
            if found and int(found[1]) >= 8:
                major, minor = int(found[1]), int(found[2] or 0)

                def spell(major: int, minor: int) -> str:
                    return f"v{major}.{minor}" if minor else f"v{major}"

                if major == 9:  # v9.0 diverged from v8.5: v9.x runs v8.(x+5)
                    vector += [plat("arm64", spell(9, m)) for m in range(minor - 1, -1, -1)]
                    major, minor = 8, minor + 5
                    vector.append(plat("arm64", spell(8, minor)))
                if major == 8:
                    vector += [plat("arm64", spell(8, m)) for m in range(minor - 1, -1, -1)]
                    vector += plat("arm", "v8").compatible()
        return tuple(dict.fromkeys(vector))

    def matches(self, other: Platform) -> bool:
        """Same os, architecture and (normalized) variant; ``unknown`` never matches.
        ``os.version`` and ``os.features`` are ignored."""
        a, b = self.normalized(), other.normalized()
        if "unknown" in (a.os, a.architecture, b.os, b.architecture):
            return False
        return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)

    def accepts(self, other: Platform) -> bool:
        """Whether ``other`` is one of :meth:`compatible` (a request for ``self``
        may be served an image for ``other``; a machine of ``self`` runs it)."""
        return any(p.matches(other) for p in self.compatible())

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def as_platform(value: Platform | str | None) -> Platform | None:
    """``None`` stays ``None`` (meaning the host's); a string is :meth:`Platform.parse`\\ d;
    a :class:`Platform` is normalized. Raises :class:`InvalidOptionError`."""
    if value is None or isinstance(value, Platform):
        return value.normalized() if value is not None else None
    return Platform.parse(value)


def _amd64_level(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """The x86-64 micro-architecture level (1..4) of this CPU, from its flags."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return 1
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    level = 1
    for n, needed in _AMD64_LEVEL_FLAGS:
        if not needed <= flags:
            break
        level = n
    return level


def _binfmt_architectures(directory: Path = BINFMT_MISC_DIR) -> set[str]:
    """Go architectures with an enabled binfmt_misc handler carrying the ``F``
    (fix binary) flag, the kind that works inside a container's rootfs."""
    found: set[str] = set()
    try:
        if (directory / "status").read_text().strip() != "enabled":
            return found
        entries = list(directory.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.startswith("qemu-"):
            continue
        try:
            lines = entry.read_text().splitlines()
        except OSError:
            continue
        flags = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("flags:")), "")
        if lines and lines[0].strip() == "enabled" and "F" in flags:
            name = entry.name.removeprefix("qemu-").removesuffix("-static")
            if name in _QEMU_ARCHITECTURES:
                found.add(_QEMU_ARCHITECTURES[name])
    return found


def host_can_run(
    platform: Platform,
    *,
    host: Platform | None = None,
    binfmt_misc: Path = BINFMT_MISC_DIR,
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> bool:
    """Whether this machine runs binaries of ``platform``: natively (the host
    platform, with its amd64 level read from ``cpuinfo``, accepts it; see
    :meth:`Platform.compatible`) or through a binfmt_misc handler with the ``F``
    flag for its architecture (qemu-user-static). A platform without os or
    architecture is given the benefit of the doubt."""
    wanted = platform.normalized()
    if not wanted.os or not wanted.architecture:
        return True
    host = (host or Platform.host()).normalized()
    if host.architecture == "amd64" and not host.variant:
        level = _amd64_level(cpuinfo)
        host = Platform(host.os, "amd64", f"v{level}" if level > 1 else "")
    if host.accepts(wanted):
        return True
    return wanted.os == host.os and wanted.architecture in _binfmt_architectures(binfmt_misc)


def is_attestation(desc: Descriptor) -> bool:
    """Whether an index entry is an attestation or other non-image entry
    (``unknown/unknown`` platform, or annotated ``vnd.docker.reference.type``)."""
    if _ATTESTATION_ANNOTATION in desc.annotations:
        return True
    plat = desc.platform
    return plat is not None and "unknown" in (plat.os, plat.architecture)


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
            doc["platform"] = self.platform.to_dict()
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
        doc = load_json_object(data, "manifest")
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
        doc = load_json_object(data, "image index")
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
        """The entry for ``platform`` (default: :meth:`Platform.host`), best match first.

        Rules (containerd ``platforms.Only``; image-index.md ``platform``):
        each platform of ``platform.compatible()`` is tried in order, and the
        first entry (in index order) whose normalized os, architecture and
        variant equal it wins: so ``arm/v7`` takes a ``v7`` entry, else
        ``v6``, else ``v5``, and never ``v8``; ``arm64`` and ``arm64/v8`` are
        the same; ``amd64/v3`` takes ``v3``, ``v2``, then plain ``amd64``; a
        plain ``amd64`` takes no ``v2``..``v4``-only image. ``os.version`` and
        ``os.features`` are ignored. Attestation entries (``unknown/unknown``
        or annotated ``vnd.docker.reference.type``) and non-image media types
        are never chosen. Entries without a platform are chosen only when the
        index has exactly one entry.

        Raises :class:`PlatformNotFoundError` (fields ``platform``, the wanted
        ``os/arch[/variant]``; ``available``, the image entries' platforms in
        index order, attestations left out).
        """
        wanted = (platform or Platform.host()).normalized()
        candidates = [
            d
            for d in self.manifests
            if d.platform is not None
            and not is_attestation(d)
            and d.media_type in (mt.MANIFEST_TYPES | mt.INDEX_TYPES | {""})
        ]
        for acceptable in wanted.compatible():
            for desc in candidates:
                assert desc.platform is not None
                if acceptable.matches(desc.platform):
                    return desc
        if len(self.manifests) == 1 and self.manifests[0].platform is None:
            return self.manifests[0]
        available = list(
            dict.fromkeys(
                str(d.platform.normalized())
                for d in self.manifests
                if d.platform is not None and not is_attestation(d)
            )
        )
        raise PlatformNotFoundError(
            f"no image for platform {wanted} in the index; it has images for: "
            f"{', '.join(available) or 'no platform'}",
            platform=str(wanted),
            available=available,
        )


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index, dispatching on ``media_type`` or the document's own.

    Raises :class:`UnsupportedMediaTypeError` for schema 1 and unknown types.
    """
    doc = load_json_object(data, "manifest")
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


#: Indexes nested below an index that :func:`select_manifest` follows, at most.
MAX_INDEX_DEPTH = 4


def select_manifest(
    document: Manifest | Index,
    load: Callable[[Descriptor], Manifest | Index],
    platform: Platform | None,
    where: str,
) -> tuple[Manifest, int]:
    """The image manifest for ``platform`` (``None``: the host's) that ``document``
    is or leads to: each index's :meth:`Index.select` entry is loaded with ``load``
    (fetch or read, then parse), nested indexes followed up to
    :data:`MAX_INDEX_DEPTH`. Returns ``(manifest, indexes descended)``.

    Raises :class:`PlatformNotFoundError` (from :meth:`Index.select`),
    :class:`ImageError` naming ``where`` when indexes nest deeper, and what ``load`` raises.
    """
    depth = 0
    while isinstance(document, Index):
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise ImageError(f"{where}: indexes nested deeper than {MAX_INDEX_DEPTH}")
        document = load(document.select(platform or Platform.host()))
    return document, depth


def check_image_media_types(manifest: Manifest, where: str, **fields: Any) -> None:
    """Raise :class:`UnsupportedMediaTypeError` (message starting with ``where``,
    with ``fields``) unless the config is an image config and every layer a layer
    type this package unpacks (image-spec manifest.md, "Image Manifest Property
    Descriptions")."""
    if manifest.config.media_type not in mt.CONFIG_TYPES:
        raise UnsupportedMediaTypeError(
            f"{where}: config media type {manifest.config.media_type!r} is not an image config",
            media_type=manifest.config.media_type,
            **fields,
        )
    for layer in manifest.layers:
        if layer.media_type not in mt.LAYER_TYPES:
            raise UnsupportedMediaTypeError(
                f"{where}: layer {layer.digest} has unsupported media type {layer.media_type!r}",
                media_type=layer.media_type,
                **fields,
            )


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration (config.md): how to run the image and its diffIDs.

    ``diff_ids``: ``sha256:<hex>`` of each *uncompressed* layer, base first.
    ``env``: ``KEY=value`` strings. ``stop_signal``: ``StopSignal`` as written
    (``"SIGQUIT"``, ``"3"``), ``""`` if unset. ``raw``: the whole parsed document.
    """

    architecture: str
    os: str
    variant: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    diff_ids: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageConfig:
        doc = load_json_object(data, "image config")
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
            stop_signal=str(conf.get("StopSignal") or ""),
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
    doc = load_json_object(data, "manifest")
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
