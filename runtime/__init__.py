"""The runtime-spec side of pytest-containers (installed as ``pytest_containers.runtime``).

Knows nothing of images, pytest or plugins.
"""

from .protocol import Container, Runtime
from .types import ContainerSpec, ExecResult, ExitStatus, Mount, Resources, Stats, parse_size

__all__ = [
    "Container",
    "ContainerSpec",
    "ExecResult",
    "ExitStatus",
    "Mount",
    "Resources",
    "Runtime",
    "Stats",
    "parse_size",
]
