"""Checks that hold for the whole test session."""

import sys

# The repository's folders are installed as ``tunefit.app``, ``tunefit.estimator`` and
# ``tunefit.profiler``; the test run starts in the repository, where they would also import under
# their bare names. A second copy of a module has its own caches and classes, so nothing may.
BARE_NAMES = ("app", "estimator", "profiler", "templates", "reports")


def pytest_sessionfinish(session, exitstatus):
    loaded = [name for name in BARE_NAMES if name in sys.modules]
    if loaded:
        session.exitstatus = 1
        sys.stderr.write(f"\nimported under a bare name (use tunefit.<name>): {', '.join(loaded)}\n")
