"""The ``runc`` and ``crun`` backends: :class:`~pytest_containers.runtime.ocicli.OciCliRuntime`
over the binary of that name.

crun support is minimal for now: crun 1.8.1 refuses to start on a hybrid
cgroup host whose cgroup2 hierarchy holds a controller ("cgroups in hybrid mode
not supported, drop all controllers from cgroupv2"), so on such a host
``containers_make_runtime("crun", ...)`` raises ``ContainerRuntimeError``
saying so and what to do instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pytest_containers.runtime.linux import cgroups
from pytest_containers.runtime.ocicli import OciCliRuntime

from pytest_containers.exceptions import ContainerRuntimeError
from pytest_containers.hookspecs import hookimpl

NAMES = ("runc", "crun")


def _hybrid_v2_controllers() -> tuple[Path, list[str]] | None:
    """On a hybrid host (v1 hierarchies plus a cgroup2 mount that is not
    ``/sys/fs/cgroup`` itself), the cgroup2 mount and the controllers it holds."""
    mounted = cgroups.hierarchies()
    unified = [path for fstype, path in mounted if fstype == "cgroup2"]
    if not unified or not any(fstype == "cgroup" for fstype, _ in mounted):
        return None
    try:
        controllers = (unified[0] / "cgroup.controllers").read_text().split()
    except OSError:
        return None
    return unified[0], controllers


def crun_problem() -> str | None:
    """Why crun cannot start containers on this host, with the remedy; ``None`` if it can."""
    found = _hybrid_v2_controllers()
    if found is None or not found[1]:
        return None
    unified, controllers = found
    return (
        f"crun cannot run containers on this host: it uses hybrid cgroups and the cgroup2 "
        f"hierarchy at {unified} holds the controller(s) {', '.join(controllers)}, which "
        f"crun refuses ('cgroups in hybrid mode not supported, drop all controllers from "
        f"cgroupv2'). Use --container-runtime=runc or native, or run the session inside a "
        f"private mount namespace without that mount "
        f"(unshare -m --propagation private sh -c 'umount {unified} && pytest ...')."
    )


@hookimpl
def containers_make_runtime(name: str, options: dict[str, object]) -> OciCliRuntime | None:
    """``runc`` or ``crun`` (when it can start here), with ``options["state_root"]``."""
    if name not in NAMES:
        return None
    if shutil.which(name) is None:
        raise ContainerRuntimeError(
            f"{name!r} is not on PATH: install it or choose another --container-runtime", name=name
        )
    if name == "crun":
        problem = crun_problem()
        if problem is not None:
            raise ContainerRuntimeError(problem, name=name)
    state_root = options.get("state_root")
    state_root = Path(state_root) if isinstance(state_root, (str, Path)) else None
    return OciCliRuntime(name, state_root=state_root)


@hookimpl
def containers_runtime_names() -> list[str]:
    """``runc`` and ``crun``, those found on PATH."""
    return [n for n in NAMES if shutil.which(n) is not None]
