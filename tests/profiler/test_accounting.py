"""Exact live-tensor accounting on CPU."""

import pytest

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")

from tunefit.profiler.accounting import LiveTensorBytes, model_tensors  # noqa: E402


def test_counts_new_storages_once_and_releases_them():
    mode = LiveTensorBytes()
    with mode:
        a = torch.zeros(1000)  # 4,000 bytes
        view = a[:10]  # a view: same storage, not counted again
        b = a * 2  # a new storage
        assert mode.current_bytes == 8000
        del b
        assert mode.current_bytes == 4000
        assert mode.peak_bytes == 8000
        del view, a
    assert mode.current_bytes == 0


def test_reset_peak_starts_from_what_is_alive():
    mode = LiveTensorBytes()
    with mode:
        keep = torch.ones(100, dtype=torch.float64)  # 800 bytes
        tmp = torch.ones(1000, dtype=torch.float64)
        del tmp
        mode.reset_peak()
        assert mode.peak_bytes == 800
        _ = keep + 1
        assert mode.peak_bytes == 1600


def test_backward_and_optimizer_are_seen():
    model = torch.nn.Linear(64, 64)
    mode = LiveTensorBytes()
    mode.track_all(model_tensors(model))
    assert mode.current_bytes == (64 * 64 + 64) * 4
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with mode:
        model(torch.randn(8, 64)).sum().backward()
        grads = mode.current_bytes - (64 * 64 + 64) * 4
        assert grads >= (64 * 64 + 64) * 4  # one gradient per parameter (+ the input, freed later)
        opt.step()
    # SGD momentum keeps one buffer per parameter next to the gradients
    assert mode.current_bytes >= 3 * (64 * 64 + 64) * 4
