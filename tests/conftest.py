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
