"""pytest plugin of pytest-containers (entry point ``pytest11: containers``).

In pytest's ``tmpdir.py`` order: options, configure (option checks; SIGTERM
made to tear down like Ctrl-C), session start (sweep what dead sessions
left), the fixtures (in :mod:`pytest_containers.fixtures`), session finish
(tear down anything still running).
"""

from __future__ import annotations

import signal
import threading

import pytest

from ._pluginmanager import runtime_names
from .exceptions import ContainersError
from .fixtures import (
    container_cgroup_parent,
    container_runtime,
    containers,
    factories_key,
    images,
    session_resources,
)
from .image.manifest import Platform
from .image.pull import PULL_POLICIES
from .image.store import Store

__all__ = ["container_cgroup_parent", "container_runtime", "containers", "images"]


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
    group.addoption(
        "--container-platform",
        dest="container_platform",
        default=None,
        metavar="OS/ARCH[/VARIANT]",
        help="platform of the images pulled (e.g. linux/arm64/v8; default: this machine's)",
    )
    for kind, metavar, what in (
        ("memory", "SIZE", "memory limit (64m, 1g)"),
        ("cpus", "N", "CPU limit (0.5, 2)"),
        ("pids", "N", "pids limit"),
    ):
        group.addoption(
            f"--container-session-{kind}",
            dest=f"container_session_{kind}",
            default=None,
            metavar=metavar,
            help=f"{what} shared by all the session's containers (their parent cgroup)",
        )
        parser.addini(f"container_session_{kind}", f"session {what}", default=None)
    parser.addini("container_runtime", "container backend name (default native)")
    # default None: an ini key set to nothing reads "" (and is refused), unset None
    parser.addini("container_store", "image store directory", default=None)
    parser.addini("container_pull", "pull policy: always, missing, never", default=None)
    parser.addini("container_platform", "image platform os/arch[/variant] (default: the host's)")


def _given(config: pytest.Config, name: str) -> tuple[str, str | None]:
    """``(where, value)`` of an option: from the command line (``--name``) if given
    there, else from the ini file (``ini name``; ``None`` when not set at all)."""
    value = config.getoption(name)
    if value is not None:
        return f"--{name.replace('_', '-')}", value
    value = config.getini(name)
    return f"ini {name}", None if value is None else str(value)


def pytest_configure(config: pytest.Config) -> None:
    """Check the options (usage error, exit 4, naming the option or ini key and
    what is wrong), make SIGTERM tear down like Ctrl-C, load the registry plugin."""
    _terminate_like_interrupt(config)
    where, store = _given(config, "container_store")
    if store is not None:
        try:
            Store(store)
        except (ValueError, ContainersError) as exc:
            raise pytest.UsageError(f"{where}: {exc}") from None
    where, policy = _given(config, "container_pull")
    if policy is not None and policy not in PULL_POLICIES:
        raise pytest.UsageError(
            f"{where}: invalid pull policy {policy!r}; allowed values: {', '.join(PULL_POLICIES)}"
        )
    try:
        session_resources(config)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    platform = config.getoption("container_platform") or config.getini("container_platform")
    if platform:
        try:
            Platform.parse(platform)
        except ValueError as exc:
            raise pytest.UsageError(f"--container-platform: {exc}") from None
    if not config.pluginmanager.has_plugin("pytest_containers.plugins.registry"):
        config.pluginmanager.import_plugin("pytest_containers.plugins.registry")
    name = config.getoption("container_runtime") or config.getini("container_runtime")
    if name:
        names = runtime_names()
        if name not in names:
            raise pytest.UsageError(
                f"--container-runtime: unknown backend {name!r}; available: {', '.join(names)}"
            )


def _terminate_like_interrupt(config: pytest.Config) -> None:
    """SIGTERM (what ``timeout`` and CI runners send) tears down like Ctrl-C: it
    raises ``KeyboardInterrupt``, so fixtures remove their containers before
    pytest exits. Only when SIGTERM still has its default action, and only in
    the main thread; the old handler is restored at unconfigure."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, on_sigterm)
    config.add_cleanup(restore)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Sweep containers, cgroups and state dirs whose owner process is dead, and
    the parent cgroups of dead sessions."""
    from .runtime.sweep import sweep, sweep_session_cgroups

    sweep()
    sweep_session_cgroups()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove whatever a fixture teardown did not (interrupted sessions)."""
    for factory in list(session.config.stash.get(factories_key, None) or ()):
        factory.close()
