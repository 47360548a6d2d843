"""The fixtures: ``container_runtime`` and ``images`` (session), ``containers`` (function)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._pluginmanager import make_runtime
from .containers import Containers
from .exceptions import BackendNotFoundError
from .image.store import Store
from .images import Images, default_root
from .runtime import Runtime

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


@pytest.fixture
def containers(
    request: pytest.FixtureRequest, images: Images, container_runtime: Runtime
) -> Iterator[Containers]:
    """Function scope. Depends on ``images`` and ``container_runtime``. Yields a
    :class:`Containers` factory: ``run(image, command, memory=, cpus=, pids=, ...)``
    runs to completion, ``start(...)`` returns a handle. At teardown, also when
    the test failed or was interrupted, every container it started is killed,
    reaped, unmounted and its cgroup and state dir removed."""
    factory = Containers(images, container_runtime)
    registry = request.config.stash.setdefault(factories_key, [])
    registry.append(factory)
    try:
        yield factory
    finally:
        registry.remove(factory)
        factory.close()
