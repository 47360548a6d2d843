"""The one exception tree of pytest-containers.

::

    ContainersError (Exception)
    ├── InvalidReferenceError (ValueError)       a malformed image reference
    ├── InvalidOptionError (ValueError)          a bad option value (memory, cpus, pids...)
    ├── RegistryError                            talking to a registry failed
    │   ├── RegistryUnavailableError (ConnectionError)   down, refused, timed out
    │   ├── AuthenticationError (PermissionError)        401/403, token flow failed
    │   └── ManifestUnknownError (LookupError)           unknown repository, tag or digest
    ├── ImageError                               the image or the local store is unusable
    │   ├── DigestMismatchError (ValueError)     bytes do not match size or digest
    │   ├── UnsupportedMediaTypeError (ValueError)
    │   ├── PlatformNotFoundError (LookupError)  no index entry for this platform
    │   ├── ImageNotFoundError (LookupError)     not in the local store (pull policy never)
    │   ├── UnsafeLayerError (ValueError)        a layer entry would write outside its rootfs
    │   └── StoreLockTimeoutError (TimeoutError) another process held a store lock too long
    └── ContainerRuntimeError (RuntimeError)
        ├── BackendNotFoundError (LookupError)   unknown --container-runtime name
        ├── CommandNotFoundError (FileNotFoundError)  the command is not in the image
        ├── ContainerNotFoundError (LookupError) no container of that id (ptc-runtime)
        ├── ContainerStartError                  create/start failed; nothing left behind
        ├── ContainerTimeoutError (TimeoutError) still running after the timeout; killed
        ├── ContainerWaitError                   not ready: timed out, exited, or unhealthy
        └── CgroupError (OSError)                a cgroup could not be made or written

Every exception carries structured fields (``reference``, ``digest``,
``argv``, ``returncode``, ``stderr``, ``errno``...) and pickles with them, so
that pytest-xdist can send it between processes (urllib3 ``exceptions.py``).
"""

from __future__ import annotations

import errno as _errno
from typing import Any


class ContainersError(Exception):
    """Base of every error raised by pytest-containers.

    Subclasses keep their keyword fields in ``self.fields`` (also set as
    attributes) so ``pickle`` rebuilds them exactly.
    """

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[ContainersError], message: str, fields: dict[str, Any]) -> ContainersError:
    return cls(message, **fields)


class InvalidReferenceError(ContainersError, ValueError):
    """A malformed image reference. Fields: ``reference``."""


class InvalidOptionError(ContainersError, ValueError):
    """A bad option value. Fields: ``option`` (its name), ``value``."""


class RegistryError(ContainersError):
    """Talking to a registry failed. Fields: ``url``, ``status``."""


class RegistryUnavailableError(RegistryError, ConnectionError):
    """The registry is down, refused the connection or timed out. Fields: ``url``."""


class AuthenticationError(RegistryError, PermissionError):
    """The registry refused our credentials or the token flow failed.

    Fields: ``url``, ``status``."""


class ManifestUnknownError(RegistryError, LookupError):
    """Unknown repository, tag or digest. Fields: ``reference``, ``status``."""


class ImageError(ContainersError):
    """The image's content, or the local store holding it, is unusable."""


class DigestMismatchError(ImageError, ValueError):
    """Bytes do not match the expected size or digest. Fields: ``digest``, ``actual``, ``size``."""


class UnsupportedMediaTypeError(ImageError, ValueError):
    """A manifest or layer media type we cannot handle. Fields: ``media_type``."""


class PlatformNotFoundError(ImageError, LookupError):
    """No entry of an index matches the wanted platform. Fields: ``platform``, ``available``."""


class ImageNotFoundError(ImageError, LookupError):
    """The image is not in the local store. Fields: ``reference``."""


class UnsafeLayerError(ImageError, ValueError):
    """A layer entry would write outside its rootfs. Fields: ``digest``, ``path``."""


class StoreLockTimeoutError(ImageError, TimeoutError):
    """A lock of the local image store was not released within ``timeout``.

    Fields: ``lock_path`` (the lock file), ``timeout`` (seconds waited),
    ``holder_pids`` (processes holding the lock, from ``/proc/locks``; empty when
    unknown), ``digest`` (the blob digest or snapshot chainID the lock is for,
    ``None`` for the store's ``index.json``)."""


class ContainerRuntimeError(ContainersError, RuntimeError):
    """A container could not be run. Fields vary: ``argv``, ``returncode``, ``stderr``."""


class BackendNotFoundError(ContainerRuntimeError, LookupError):
    """Unknown runtime backend name. Fields: ``name``, ``available``."""


class CommandNotFoundError(ContainerRuntimeError, FileNotFoundError):
    """The command does not exist in the image. Fields: ``argv``."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errno = _errno.ENOENT


class ContainerNotFoundError(ContainerRuntimeError, LookupError):
    """No container of that id under the runtime's state root. Fields: ``container_id``."""


class ContainerStartError(ContainerRuntimeError):
    """Create or start failed; nothing of the container is left behind.

    Fields: ``container_id``, ``argv``, ``stderr``.
    """


class ContainerTimeoutError(ContainerRuntimeError, TimeoutError):
    """A container ran past its ``timeout`` and was killed and removed.

    Fields: ``container_id``, ``timeout`` (seconds), ``stdout``, ``stderr`` (its
    output until then, decoded)."""


class ContainerWaitError(ContainerRuntimeError):
    """A started container did not become ready (``pytest_containers.wait``).

    Fields: ``container_id``, ``image``, ``strategy`` (its readable repr, e.g.
    ``"for_port(8080)"``), ``reason`` (``"timeout"``: not ready within ``timeout``
    seconds; ``"exited"``: the container's process exited first, ``exit_code``
    says how; ``"failed"``: the strategy can never succeed, e.g. the image's
    HEALTHCHECK reported unhealthy), ``timeout`` and ``elapsed`` (seconds),
    ``last_error`` (why the last check failed, ``None`` if none did),
    ``exit_code`` (128+N for signal N; ``None`` while running), ``logs`` (the
    last lines of the container's stdout and stderr, formatted)."""


class CgroupError(ContainerRuntimeError, OSError):
    """A cgroup could not be created, written or removed. Fields: ``path``, ``errno``."""
