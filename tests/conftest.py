import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """These models are tiny: one thread is faster and steadier on a 2-core machine.

    Session-scoped so that module- and session-scoped fixtures run single-threaded too.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data():
    from bnteach.data import load_data

    return load_data()


# ------------------------------------------------------------------ shared test helpers
# Imported by the test files with ``from conftest import ...`` (pytest puts tests/ on the path).


def table(cases):
    """``pytest.mark.parametrize`` over a bad-input table: rows ``(id, call, error, phrase)``,
    the test receiving ``call, error, phrase`` and ids from the first column."""
    return pytest.mark.parametrize(
        "call, error, phrase", [c[1:] for c in cases], ids=[c[0] for c in cases]
    )


def assert_teaching_error(call, error, phrase):
    """``call()`` raises ``error`` and its message contains ``phrase``; returns the error.

    The teaching error is shown when the phrase is missing, so a changed message is easy to
    compare with the table."""
    with pytest.raises(error) as info:
        call()
    assert phrase in str(info.value), str(info.value)
    return info.value


# The flags DESIGN.md's browser recipe gives Debian's chromium, for the browser and book tests.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
