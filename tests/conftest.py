"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """The probe networks and images are small: intra-op threads gain little, and they stall one
    another when other work shares the machine (10-30x slower), so these tests run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Modules opt in: pytestmark = pytest.mark.usefixtures("one_torch_thread")
