"""pytest plugin of pytest-containers (entry point ``pytest11: containers``).

In pytest's ``tmpdir.py`` order: options, configure, session start (sweep
what dead sessions left), the fixtures (in :mod:`pytest_containers.fixtures`),
session finish (tear down anything still running).
"""

from __future__ import annotations

import pytest

from ._pluginmanager import runtime_names
from .fixtures import container_runtime, containers, factories_key, images

__all__ = ["container_runtime", "containers", "images"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("containers", "pytest-containers")
    group.addoption(
        "--container-runtime",
        dest="container_runtime",
        default=None,
        metavar="NAME",
        help="container backend: native (default), runc, crun, podman, or a plugin's name",
    )
    group.addoption(
        "--container-store",
        dest="container_store",
        default=None,
        metavar="DIR",
        help="image store directory (default: $XDG_CACHE_HOME/pytest-containers)",
    )
    group.addoption(
        "--container-pull",
        dest="container_pull",
        default=None,
        choices=("always", "missing", "never"),
        help="pull policy for images: always, missing (default), never",
    )
    parser.addini("container_runtime", "container backend name (default native)")
    parser.addini("container_store", "image store directory")
    parser.addini("container_pull", "pull policy: always, missing, never")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "container(image, **options): run the test with a container of IMAGE "
        "as the `container` fixture",
    )
    if not config.pluginmanager.has_plugin("pytest_containers.plugins.registry"):
        config.pluginmanager.import_plugin("pytest_containers.plugins.registry")
    name = config.getoption("container_runtime") or config.getini("container_runtime")
    if name:
        names = runtime_names()
        if name not in names:
            raise pytest.UsageError(
                f"--container-runtime: unknown backend {name!r}; available: {', '.join(names)}"
            )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sweep containers, cgroups and state dirs whose owner process is dead."""
    from .runtime.native.sweep import sweep

    sweep()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove whatever a fixture teardown did not (interrupted sessions)."""
    for factory in list(session.config.stash.get(factories_key, None) or ()):
        factory.close()
