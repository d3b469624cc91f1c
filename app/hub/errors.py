"""What can go wrong with a Hub id, each answered with a status a client can act on (never a 500):
not found (404, with close ids), gated (403: accept the licence, set HF_TOKEN), the Hub unreachable
or slow with nothing stored (424), a repo that is not a causal LM (422)."""

from __future__ import annotations

from tunefit.app.hub.ids import HubRef
from tunefit.estimator import EstimateError


class HubError(EstimateError):
    """An error about a Hub id; ``status`` is the HTTP status the service answers it with."""

    status = 422

    def __init__(self, ref: HubRef, message: str, suggestions: list[str] | None = None):
        self.ref = ref
        self.suggestions = suggestions or []
        super().__init__("model", message)


class HubNotFound(HubError):
    status = 404

    def __init__(self, ref: HubRef, revision: bool = False, suggestions: list[str] | None = None):
        what = f"revision {ref.revision!r} of {ref.repo_id!r}" if revision else f"{ref.repo_id!r}"
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(ref, f"{what} was not found on the Hugging Face Hub (or is private: set HF_TOKEN){hint}",
                         suggestions)


class HubGated(HubError):
    status = 403

    def __init__(self, ref: HubRef, had_token: bool):
        step = ("the token set (HF_TOKEN) has not been granted access: accept the licence on the model's page "
                "with that account") if had_token else \
            "accept its licence on the model's page, then set HF_TOKEN to a token of that account"
        super().__init__(ref, f"{ref.repo_id!r} is a gated model: {step}")


class HubUnavailable(HubError):
    status = 424  # Failed Dependency: the request is fine, the Hub it needs did not answer

    def __init__(self, ref: HubRef, why: str):
        super().__init__(ref, f"cannot read {str(ref)!r}: {why}, and no copy is stored; try again, or name a catalog "
                              "id or paste its config.json")


class NotACausalLM(HubError):
    def __init__(self, ref: HubRef, why: str):
        super().__init__(ref, f"{ref.repo_id!r}: {why}")
