"""The public surface: ``__all__`` is sorted and names exactly what is exported
(httpx ``tests/test_exported_members.py``)."""

import pickle
import types

import pytest
import pytest_containers.runtime

import pytest_containers


@pytest.mark.parametrize(
    "module", [pytest_containers, pytest_containers.runtime], ids=lambda m: m.__name__
)
def test_all_is_sorted_and_complete(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__)
    exported = {
        name
        for name in dir(module)  # the lazily imported names too (PEP 562 __dir__)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), types.ModuleType)
    }
    assert exported == set(module.__all__)


def test_exceptions_pickle_with_their_fields() -> None:
    exc = pytest_containers.DigestMismatchError(
        "bad blob", digest="sha256:" + "0" * 64, actual="sha256:" + "1" * 64, size=3
    )
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is pytest_containers.DigestMismatchError
    assert (back.digest, back.actual, back.size, str(back)) == (
        exc.digest,
        exc.actual,
        3,
        "bad blob",
    )
    assert isinstance(back, ValueError)


def test_store_lock_timeout_error_pickles_and_sits_in_the_tree() -> None:
    exc = pytest_containers.StoreLockTimeoutError(
        "timed out after 0.5 s waiting for the index of the store /s: lock file"
        " /s/locks/index.json.lock is held by pid 42 (pytest)",
        lock_path="/s/locks/index.json.lock",
        timeout=0.5,
        holder_pids=[42],
        digest=None,
    )
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is pytest_containers.StoreLockTimeoutError
    assert (back.lock_path, back.timeout, back.holder_pids, back.digest) == (
        "/s/locks/index.json.lock",
        0.5,
        [42],
        None,
    )
    assert str(back) == str(exc)
    assert isinstance(back, pytest_containers.ImageError)
    assert isinstance(back, pytest_containers.ContainersError)
    assert isinstance(back, TimeoutError)
    assert "StoreLockTimeoutError (TimeoutError)" in pytest_containers.exceptions.__doc__


def test_container_wait_error_pickles_and_sits_in_the_tree() -> None:
    exc = pytest_containers.ContainerWaitError(
        "container ptc-0 not ready within 1 s: for_port(8080) not satisfied",
        container_id="ptc-0",
        image="busybox",
        strategy="for_port(8080)",
        reason="timeout",
        timeout=1.0,
        elapsed=1.01,
        last_error="ConnectionRefusedError: [Errno 111] Connection refused",
        exit_code=None,
        logs="no output on stdout or stderr",
    )
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is pytest_containers.ContainerWaitError
    assert back.fields == exc.fields and str(back) == str(exc)
    assert isinstance(back, pytest_containers.ContainerRuntimeError)
    assert "ContainerWaitError" in pytest_containers.exceptions.__doc__
