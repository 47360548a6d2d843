"""The pluggy plugin manager of pytest-containers: our hookspecs, our built-in
backends, and third-party plugins from the entry point group ``pytest_containers``."""

from __future__ import annotations

import functools
from pathlib import Path

import pluggy

from . import hookspecs
from .exceptions import BackendNotFoundError
from .runtime import Runtime


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with built-in and entry-point plugins registered."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    from .plugins import native, runc

    pm.register(native, "native")
    pm.register(runc, "runc")
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def runtime_names(pm: pluggy.PluginManager | None = None) -> list[str]:
    """Every backend name the registered plugins offer, sorted."""
    pm = pm or get_plugin_manager()
    return sorted({n for names in pm.hook.containers_runtime_names() for n in names})


def make_runtime(name: str, *, state_root: Path | None = None) -> Runtime:
    """The backend called ``name``. Raises ``BackendNotFoundError`` listing the known names."""
    pm = get_plugin_manager()
    options: dict[str, object] = {}
    if state_root is not None:
        options["state_root"] = state_root
    runtime = pm.hook.containers_make_runtime(name=name, options=options)
    if runtime is None:
        names = runtime_names(pm)
        raise BackendNotFoundError(
            f"unknown container runtime {name!r}; available: {', '.join(names)}",
            name=name,
            available=names,
        )
    return runtime
