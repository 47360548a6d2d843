"""Hook specifications of pytest-containers (pluggy project ``pytest_containers``).

Hooks are named ``containers_*``: a conftest function named ``pytest_*`` would
be taken by pytest as its own hook and rejected when unknown. Implementations
live in ``pytest_containers.plugins`` and in third-party packages that declare
the entry point group ``pytest_containers``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .runtime import Runtime

PROJECT = "pytest_containers"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def containers_make_runtime(name: str, options: dict[str, object]) -> Runtime | None:
    """Return the backend called ``name`` (``--container-runtime``), or ``None``.

    Called once per session (and by the CLI once per command) when the
    backend is first needed. ``options`` holds backend settings such as
    ``state_root`` (a ``pathlib.Path``). The first non-``None`` result wins;
    when every implementation returns ``None`` the name is unknown and
    ``BackendNotFoundError`` lists :func:`containers_runtime_names`.
    """


@hookspec
def containers_runtime_names() -> list[str]:
    """Return the backend names this plugin can make.

    Called to list the available backends in errors and ``--help``; the
    results of all implementations are concatenated.
    """
