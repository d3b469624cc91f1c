"""What the profiler's test modules share: the extra they need and the library notices they ignore."""

import pytest

# Notices transformers, peft and bitsandbytes give while a model is built, wrapped and trained: about
# those libraries' own APIs, not about what is measured.
LIBRARY_NOTICES = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # peft matches the doubled rank of fused MoE experts on the parameter, then says no *module* matched
    pytest.mark.filterwarnings("ignore:The following (rank|alpha)_pattern keys did not match:RuntimeWarning"),
]


def require_profiler_extra() -> None:
    """Skip the calling test module where the ``[profiler]`` extra (torch, peft) is not installed."""
    pytest.importorskip("torch", reason="needs the [profiler] extra")
    pytest.importorskip("peft")
