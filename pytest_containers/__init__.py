"""pytest-containers: pytest fixtures that pull or build OCI images and run
ephemeral, namespaced, cgroup-limited containers. No daemon, works offline,
nothing left behind.

This module only re-exports the public names.
"""

from .containers import ContainerHandle, Containers, RunResult
from .exceptions import (
    AuthenticationError,
    BackendNotFoundError,
    CgroupError,
    CommandNotFoundError,
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
from .hookspecs import hookimpl
from .images import Images
from .runtime import ExecResult, ExitStatus, Resources, Stats

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BackendNotFoundError",
    "CgroupError",
    "CommandNotFoundError",
    "ContainerHandle",
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
