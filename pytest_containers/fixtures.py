"""The fixtures: ``container_runtime``, ``images`` and ``container_cgroup_parent``
(session), ``containers`` (function)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._pluginmanager import make_runtime
from .containers import Containers
from .exceptions import BackendNotFoundError
from .image.store import Store
from .images import Images, default_root
from .runtime import Resources, Runtime

#: every ``Containers`` factory alive in this session, so session finish can
#: tear down what a broken fixture teardown left
factories_key = pytest.StashKey[list[Containers]]()


def _option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name.replace("-", "_"))
    if value is None:
        value = config.getini(name.replace("-", "_")) or None
    return value  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def container_runtime(pytestconfig: pytest.Config) -> Iterator[Runtime]:
    """Session scope. The backend chosen by ``--container-runtime`` (ini
    ``container_runtime``; default ``native``), made by the first
    ``containers_make_runtime`` hook result. Closed at session end (its
    helper processes end); containers belong to the ``containers`` fixture."""
    name = _option(pytestconfig, "container-runtime") or "native"
    try:
        runtime = make_runtime(name)
    except BackendNotFoundError as exc:
        raise pytest.UsageError(str(exc)) from None
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def images(pytestconfig: pytest.Config) -> Images:
    """Session scope. Pulls and looks up images in the store (``--container-store
    DIR``; default the XDG cache dir) under the pull policy ``--container-pull``
    (``always``, ``missing`` (default), ``never``), for the platform
    ``--container-platform OS/ARCH[/VARIANT]`` (default this machine's). Yields
    :class:`Images`; the store is kept across sessions, nothing to clean up."""
    root = _option(pytestconfig, "container-store")
    policy = _option(pytestconfig, "container-pull") or "missing"
    platform = _option(pytestconfig, "container-platform")
    store = Store(Path(root) if root else default_root())
    return Images(store, policy=policy, platform=platform)  # type: ignore[arg-type]


def session_resources(config: pytest.Config) -> Resources:
    """The session's limits from ``--container-session-memory|cpus|pids`` (or the
    ini keys ``container_session_*``). Raises ``ValueError`` naming the option."""
    values = {
        kind: _option(config, f"container-session-{kind}") for kind in ("memory", "cpus", "pids")
    }
    try:
        return Resources.from_options(
            memory=values["memory"],
            cpus=float(values["cpus"]) if values["cpus"] is not None else None,
            pids=int(values["pids"]) if values["pids"] is not None else None,
        )
    except ValueError as exc:
        given = ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)
        raise ValueError(f"--container-session-*: {exc} ({given})") from None


@pytest.fixture(scope="session")
def container_cgroup_parent(pytestconfig: pytest.Config) -> Iterator[str]:
    """Session scope. The cgroup every container of the session is made in,
    ``/ptc/ptc-session-<pid>`` (relative to each hierarchy's root), limited by
    ``--container-session-memory``, ``--container-session-cpus`` and
    ``--container-session-pids``: the kernel enforces them on all the session's
    containers together (cgroup hierarchy), and its counters account for all of
    them. Removed at session end, its containers' processes killed first; a
    killed session's is swept by the next one (``sweep_session_cgroups``)."""
    from .runtime.linux.cgroups import open_cgroup, remove_everywhere
    from .runtime.sweep import session_cgroup_path

    path = session_cgroup_path()
    cgroup = open_cgroup(path)
    cgroup.create(session_resources(pytestconfig))
    try:
        yield path
    finally:
        cgroup.kill_all()
        cgroup.remove()
        remove_everywhere(path)  # runc also makes it in name=systemd and unified


@pytest.fixture
def containers(
    request: pytest.FixtureRequest,
    images: Images,
    container_runtime: Runtime,
    container_cgroup_parent: str,
) -> Iterator[Containers]:
    """Function scope. Depends on ``images`` and ``container_runtime``. Yields a
    :class:`Containers` factory: ``run(image, command, memory=, cpus=, pids=, ...)``
    runs to completion, ``start(...)`` returns a handle. At teardown, also when
    the test failed or was interrupted, every container it started is killed,
    reaped, unmounted and its cgroup and state dir removed. The test's bill, one
    :meth:`~pytest_containers.containers.ContainerHandle.usage` dict per container
    (peak memory, CPU time, OOM, exit code), is added to the test's
    ``user_properties`` as ``("containers", [...])`` (``--junitxml`` writes it)."""
    factory = Containers(images, container_runtime, cgroup_parent=container_cgroup_parent)
    registry = request.config.stash.setdefault(factories_key, [])
    registry.append(factory)
    try:
        yield factory
    finally:
        registry.remove(factory)
        try:
            factory.close()
        finally:
            bill = factory.usage()
            if bill:
                request.node.user_properties.append(("containers", bill))
