"""What a Hugging Face id looks like, and how a request names one: ``org/name``, optionally
``@revision`` (a branch, a tag or a commit hash), or a ``revision`` given beside it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunefit.estimator import EstimateError

# The Hub's rule for a repo id (huggingface_hub ``utils/_validators.py``, ``REPO_ID_REGEX``): an
# optional namespace and a name of letters, digits, ``-``, ``_`` and ``.``, each at most 96 long,
# neither starting nor ending with ``-`` or ``.``, with no ``--`` or ``..`` inside.
REPO_ID = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$")
REVISION = re.compile(r"^[\w\-./]{1,255}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class HubRef:
    """A repo id and the revision asked for (``main`` when none is named)."""

    repo_id: str
    revision: str = DEFAULT_REVISION

    @property
    def pinned(self) -> bool:
        """Whether the revision is a commit hash: what it names never changes."""
        return bool(COMMIT.match(self.revision))

    def __str__(self) -> str:
        return self.repo_id if self.revision == DEFAULT_REVISION else f"{self.repo_id}@{self.revision}"


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` is spelled as a Hub id with its namespace (``org/name``, ``org/name@rev``):
    the only names the service looks up on the Hub (a bare name is a catalog id)."""
    repo_id = name.partition("@")[0]
    return "/" in repo_id and bool(REPO_ID.match(repo_id))


def parse_hub_ref(name: str, revision: str | None = None, field: str = "model") -> HubRef:
    """``org/name[@revision]`` (and a separate ``revision``, which must agree) as a :class:`HubRef`."""
    repo_id, at, inline = name.strip().partition("@")
    if at and revision and inline != revision:
        raise EstimateError("revision", f"{name!r} names revision {inline!r} and the request {revision!r}: name one")
    wanted = inline if at else (revision or DEFAULT_REVISION)
    if not REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith((".", "-")):
        raise EstimateError(field, f"{name!r} is neither a catalog id nor a Hugging Face id (org/name)")
    if not REVISION.match(wanted) or ".." in wanted:
        raise EstimateError("revision", f"{wanted!r} is not a revision (a branch, a tag or a commit hash)")
    return HubRef(repo_id, wanted)
