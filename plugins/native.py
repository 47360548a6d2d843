"""The ``native`` backend plugin: containers run by the engine in
``pytest_containers.runtime.native`` (namespaces, overlay, cgroups; no binary)."""

from __future__ import annotations

from pathlib import Path

from pytest_containers.hookspecs import hookimpl


@hookimpl
def containers_make_runtime(name: str, options: dict[str, object]):
    """``NativeRuntime(state_root=options["state_root"])`` for ``name == "native"``."""
    if name != "native":
        return None
    from pytest_containers.runtime.native.engine import NativeRuntime

    state_root = options.get("state_root")
    state_root = Path(state_root) if isinstance(state_root, (str, Path)) else None
    return NativeRuntime(state_root=state_root)


@hookimpl
def containers_runtime_names() -> list[str]:
    """``["native"]``."""
    return ["native"]
