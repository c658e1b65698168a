import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the machine is small and shared, and the tiny models gain nothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
