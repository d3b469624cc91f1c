"""Checks that hold for the whole test session."""

import os
import sys
import tempfile

# No test reaches the real Hugging Face Hub: a Hub id goes to a closed port on loopback (refused at
# once) unless a test points the service at its fake hub (tests/fakehub.py); no user token is read,
# and huggingface_hub's cache and the command line's store are this session's own.
_HOME = tempfile.mkdtemp(prefix="tunefit-tests-")
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HOME"] = os.path.join(_HOME, "huggingface")
os.environ["XDG_CACHE_HOME"] = os.path.join(_HOME, "cache")
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TUNEFIT_HUB_ENDPOINT", "TUNEFIT_HUB_TOKEN"):
    os.environ.pop(_name, None)

# The repository's folders are installed as ``tunefit.app``, ``tunefit.estimator`` and
# ``tunefit.profiler``; the test run starts in the repository, where they would also import under
# their bare names. A second copy of a module has its own caches and classes, so nothing may.
BARE_NAMES = ("app", "estimator", "profiler", "templates", "reports")


def pytest_sessionfinish(session, exitstatus):
    loaded = [name for name in BARE_NAMES if name in sys.modules]
    if loaded:
        session.exitstatus = 1
        sys.stderr.write(f"\nimported under a bare name (use tunefit.<name>): {', '.join(loaded)}\n")
