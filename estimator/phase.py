"""One moment of a step: the bytes allocated then, term by term (shared by ``estimate`` and
``sharding``, which shards a phase's terms over GPUs)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Phase:
    """Bytes allocated at one moment of the step, term by term."""

    name: str
    terms: dict[str, int]
    allocated_bytes: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocated_bytes", sum(self.terms.values()))
