"""Image references: ``[registry/]repository[:tag][@digest]``.

Grammar from distribution's ``reference/reference.go``, defaults from
Docker's ``reference/normalize.go``:

- ``busybox`` -> ``docker.io/library/busybox:latest``
- ``user/app`` -> ``docker.io/user/app:latest``
- the first ``/``-separated component is a registry host if it contains
  ``.`` or ``:``, is ``localhost`` or has an uppercase letter;
- ``index.docker.io`` is spelled ``docker.io``;
- a missing tag defaults to ``latest`` unless a digest is given;
- a registry port is 1 to 65535; repository names are lowercase.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace

from pytest_containers.exceptions import InvalidReferenceError
from pytest_containers.image.digest import is_digest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
#: The registry API host behind ``docker.io`` names.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
#: Longest ``registry/repository`` name accepted (reference.go ``NameTotalLengthMax``).
NAME_MAX_CHARS = 255
#: Highest TCP port number.
PORT_MAX = 65535

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_ANCHORED_HEX64 = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference.

    ``registry``: host[:port] as written, ``docker.io`` for Docker Hub.
    ``repository``: slash-separated lowercase path, ``library/`` added for
    Docker Hub official images. ``tag``: ``None`` only when a digest is given
    without a tag. ``digest``: ``sha256:<64 hex>`` or ``None``; when both are
    present, the digest is what gets fetched.
    """

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalize ``text``.

        Raises :class:`InvalidReferenceError` (field ``reference``) naming
        the reference and what is wrong with it (``reference must be a string, got
        int`` for a value that is not a ``str``).
        """
        if not isinstance(text, str):
            raise InvalidReferenceError(
                f"reference must be a string, got {type(text).__name__} ({text!r})",
                reference=text,
            )
        if not text:
            raise InvalidReferenceError(f"invalid reference {text!r}: empty", reference=text)

        def fail(why: str) -> InvalidReferenceError:
            return InvalidReferenceError(f"invalid reference {text!r}: {why}", reference=text)

        if text != text.strip():
            raise fail("contains whitespace")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not is_digest(digest):
                raise fail(f"digest {digest!r} is not 'sha256:' followed by 64 lowercase hex")
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise fail(f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        if not rest:
            raise fail("repository name is empty")
        registry, repository = _split_registry(rest)
        if not _DOMAIN_RE.fullmatch(registry):
            raise fail(f"registry {registry!r} is not a valid host[:port]")
        port = _port(registry)
        if port is not None and not 1 <= int(port) <= PORT_MAX:
            raise fail(f"port {port} of registry {registry!r} is not in 1-{PORT_MAX}")
        if registry == "index.docker.io":
            registry = DEFAULT_REGISTRY
        if repository.lower() != repository:
            upper = [c for c in repository.split("/") if c.lower() != c]
            fixed, hint = text.replace(repository, repository.lower(), 1), ""
            with contextlib.suppress(InvalidReferenceError):
                cls.parse(fixed)
                hint = f" (did you mean {fixed!r}?)"
            raise fail(f"repository names must be lowercase: {'/'.join(upper)!r} is not{hint}")
        if registry == DEFAULT_REGISTRY and "/" not in repository:
            repository = f"library/{repository}"
        for component in repository.split("/"):
            if not _PATH_COMPONENT_RE.fullmatch(component):
                raise fail(
                    f"repository path component {component!r} must be lowercase letters and"
                    " digits separated by '.', '_', '__' or '-'"
                )
        if len(f"{registry}/{repository}") > NAME_MAX_CHARS:
            raise fail(f"name is longer than {NAME_MAX_CHARS} characters")
        if _ANCHORED_HEX64.fullmatch(rest):
            raise fail("a 64-hex-digit name looks like an image id, not a repository")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    def __str__(self) -> str:
        """The full canonical form ``registry/repository[:tag][@digest]``."""
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if any, else the tag.

        This is the ``<reference>`` of ``GET /v2/<name>/manifests/<reference>``
        (distribution spec, "Pulling manifests").
        """
        if self.digest is not None:
            return self.digest
        assert self.tag is not None
        return self.tag

    @property
    def api_host(self) -> str:
        """The host[:port] serving the registry API (``registry-1.docker.io`` for Docker Hub)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def is_loopback(self) -> bool:
        """Whether the registry is on this machine (``localhost``, ``127.*``, ``[::1]``;
        host names compared case-insensitively)."""
        return is_loopback_host(self.registry)

    def with_digest(self, digest: str | None) -> Reference:
        """A copy pinned to ``digest`` (``sha256:<64 hex>``), keeping the tag."""
        if digest is not None and not is_digest(digest):
            raise InvalidReferenceError(
                f"invalid digest {digest!r} for {self}", reference=f"{self.name}@{digest}"
            )
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """A copy with ``tag`` and no digest."""
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r} for {self}", reference=str(self))
        return replace(self, tag=tag, digest=None)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (``host[:port]``) is a loopback address: ``localhost``,
    ``127.*`` or ``[::1]``, any port, host names in any case (DNS names are
    case-insensitive, RFC 4343)."""
    if host.startswith("[") and "]" in host:
        name = host[: host.index("]") + 1]
    else:
        name = host.split(":", 1)[0]
    name = name.lower()
    return name in ("localhost", "[::1]") or name.startswith("127.")


def _port(registry: str) -> str | None:
    """The port digits of ``host:port`` or ``[v6]:port``, ``None`` without a port."""
    rest = registry[registry.index("]") + 1 :] if registry.startswith("[") else registry
    return rest.rsplit(":", 1)[1] if ":" in rest else None


def _split_registry(name: str) -> tuple[str, str]:
    """Split ``name`` into ``(registry, repository)`` with Docker's domain rule."""
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first, remainder
    return DEFAULT_REGISTRY, name
