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
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
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
