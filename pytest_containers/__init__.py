"""pytest-containers: pytest fixtures that pull or build OCI images and run
ephemeral, namespaced, cgroup-limited containers. No daemon, works offline,
nothing left behind.

This module only re-exports the public names. The exceptions are imported at
once; the rest on first use (PEP 562), so ``import pytest_containers.runtime``
(``ptc-runtime``'s import path) does not pay for httpx and the image side.
"""

import importlib as _importlib
import typing as _typing

from .exceptions import (
    AuthenticationError,
    BackendNotFoundError,
    CgroupError,
    CommandNotFoundError,
    ContainerNotFoundError,
    ContainerRuntimeError,
    ContainersError,
    ContainerStartError,
    ContainerTimeoutError,
    ContainerWaitError,
    DigestMismatchError,
    ImageError,
    ImageNotFoundError,
    InvalidOptionError,
    InvalidReferenceError,
    ManifestUnknownError,
    PlatformNotFoundError,
    RegistryError,
    RegistryUnavailableError,
    StoreLockTimeoutError,
    UnsafeLayerError,
    UnsupportedMediaTypeError,
)

if _typing.TYPE_CHECKING:
    from .containers import ContainerHandle, Containers, RunResult
    from .hookspecs import hookimpl
    from .images import Images
    from .runtime import ExecResult, ExitStatus, Resources, Stats

#: public name -> the module it is imported from on first use
_LAZY = {
    "ContainerHandle": ".containers",
    "Containers": ".containers",
    "RunResult": ".containers",
    "hookimpl": ".hookspecs",
    "Images": ".images",
    "ExecResult": ".runtime",
    "ExitStatus": ".runtime",
    "Resources": ".runtime",
    "Stats": ".runtime",
}

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BackendNotFoundError",
    "CgroupError",
    "CommandNotFoundError",
    "ContainerHandle",
    "ContainerNotFoundError",
    "ContainerRuntimeError",
    "ContainerStartError",
    "ContainerTimeoutError",
    "ContainerWaitError",
    "Containers",
    "ContainersError",
    "DigestMismatchError",
    "ExecResult",
    "ExitStatus",
    "ImageError",
    "ImageNotFoundError",
    "Images",
    "InvalidOptionError",
    "InvalidReferenceError",
    "ManifestUnknownError",
    "PlatformNotFoundError",
    "RegistryError",
    "RegistryUnavailableError",
    "Resources",
    "RunResult",
    "Stats",
    "StoreLockTimeoutError",
    "UnsafeLayerError",
    "UnsupportedMediaTypeError",
    "hookimpl",
]


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
