"""Reading a model from the Hub with ``huggingface_hub``: the repo's commit and file list
(``HfApi.model_info``), ``config.json`` through the user's Hugging Face cache (``hf_hub_download``)
and the safetensors headers by range requests (``parse_safetensors_file_metadata``: the first
100,000 bytes of each file, never the weights). Every request has the configured time limit."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from tunefit.app.core.config import Settings
from tunefit.app.hub.errors import HubGated, HubNotFound, HubUnavailable, NotACausalLM
from tunefit.app.hub.ids import HubRef
from tunefit.app.hub.snapshot import Checkpoint, HubSnapshot, StoredTensor

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"  # huggingface_hub constants.SAFETENSORS_SINGLE_FILE
SAFETENSORS_INDEX = "model.safetensors.index.json"  # ... SAFETENSORS_INDEX_FILE
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KiB
HEADER_REQUESTS = 8  # shards whose headers are read at once (a 70B checkpoint has about 30)
# Files that say what a repo without a config.json holds instead.
NOT_A_MODEL = {"model_index.json": "a diffusers pipeline", "tokenizer.json": "a tokenizer",
               "tokenizer_config.json": "a tokenizer", "adapter_config.json": "a peft adapter",
               "modules.json": "a sentence-transformers model"}


def fetch(ref: HubRef, settings: Settings) -> HubSnapshot:
    """The snapshot of ``ref`` read from the Hub now; errors a user can act on are raised as the
    :mod:`app.hub.errors` kinds, naming the id."""
    from huggingface_hub import errors as hub_errors

    try:
        return _fetch(ref, settings)
    except hub_errors.GatedRepoError as exc:  # a subclass of RepositoryNotFoundError: first
        raise HubGated(ref, settings.hub_token is not None) from exc
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as exc:
        raise HubNotFound(ref, revision=isinstance(exc, hub_errors.RevisionNotFoundError)) from exc
    except hub_errors.OfflineModeIsEnabled as exc:
        raise HubUnavailable(ref, "huggingface_hub is in offline mode (HF_HUB_OFFLINE)") from exc
    except (OSError, hub_errors.HfHubHTTPError, hub_errors.SafetensorsParsingError) as exc:
        # httpx's timeouts and refused connections are OSErrors underneath; a 5xx is an HfHubHTTPError
        raise HubUnavailable(ref, _reason(exc, settings)) from exc
    except Exception as exc:  # httpx raises its own TimeoutException, which is neither of the above
        if type(exc).__name__.endswith(("Timeout", "TimeoutException", "ConnectError", "NetworkError",
                                        "ReadTimeout", "ConnectTimeout", "RemoteProtocolError")):
            raise HubUnavailable(ref, _reason(exc, settings)) from exc
        raise


def _reason(exc: Exception, settings: Settings) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return f"the Hub did not answer within {settings.hub_timeout_s:g} s"
    return f"the Hub at {settings.hub_endpoint} could not be reached ({name})"


def _fetch(ref: HubRef, settings: Settings) -> HubSnapshot:
    from huggingface_hub import HfApi

    token = settings.hub_token.get_secret_value() if settings.hub_token else None
    api = HfApi(endpoint=settings.hub_endpoint, token=token)
    info = api.model_info(ref.repo_id, revision=ref.revision, timeout=settings.hub_timeout_s)
    files = {s.rfilename for s in info.siblings or ()}
    sha = info.sha or ref.revision
    if CONFIG not in files:
        raise NotACausalLM(ref, _without_config(files, info.pipeline_tag))
    config = _config(api, ref, sha, settings)
    return HubSnapshot(repo_id=info.id or ref.repo_id, revision=ref.revision, sha=sha,
                       fetched_at=datetime.now(UTC).isoformat(timespec="seconds"), config=config,
                       checkpoint=_checkpoint(api, ref, sha, files, settings))


def _without_config(files: set[str], pipeline_tag: str | None) -> str:
    kinds = sorted({kind for name, kind in NOT_A_MODEL.items() if name in files})
    holds = f"holds {' and '.join(kinds)}" if kinds else "holds no model"
    tag = f" (pipeline: {pipeline_tag})" if pipeline_tag else ""
    return f"{holds}{tag} and no config.json: not a transformers causal LM"


def _config(api: Any, ref: HubRef, sha: str, settings: Settings) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(ref.repo_id, CONFIG, revision=sha, endpoint=settings.hub_endpoint, token=api.token,
                           etag_timeout=settings.hub_timeout_s)
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise NotACausalLM(ref, f"its config.json is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise NotACausalLM(ref, f"its config.json is not JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise NotACausalLM(ref, "its config.json is not a transformers config (no model_type)")
    not_causal = _not_causal(config)
    if not_causal:
        raise NotACausalLM(ref, f"{not_causal}, not a causal LM: tunefit plans causal-LM fine-tuning")
    return config


# Heads of the transformers classes a config's ``architectures`` names that are not causal LMs.
NOT_CAUSAL_HEADS = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                    "ForImageClassification", "ForAudioClassification", "ForCTC", "ForSemanticSegmentation",
                    "ForObjectDetection", "ForDepthEstimation", "ForMaskGeneration")


def _not_causal(config: dict[str, Any]) -> str | None:
    """What a config describes when that is plainly not a causal LM (an encoder-decoder, or every
    class it names an encoder's head); None when it may be one."""
    if config.get("is_encoder_decoder") is True:
        return f"an encoder-decoder model ({config['model_type']})"
    names = config.get("architectures")
    if isinstance(names, list) and names and all(isinstance(n, str) and n.endswith(NOT_CAUSAL_HEADS) for n in names):
        return f"{', '.join(names)} ({config['model_type']})"
    return None


def _checkpoint(api: Any, ref: HubRef, sha: str, files: set[str], settings: Settings) -> Checkpoint | None:
    """The safetensors headers of the repo's weights (one file, or the shards its index names)."""
    if SAFETENSORS in files:
        shards = [SAFETENSORS]
    elif SAFETENSORS_INDEX in files:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(ref.repo_id, SAFETENSORS_INDEX, revision=sha, endpoint=settings.hub_endpoint,
                               token=api.token, etag_timeout=settings.hub_timeout_s)
        with open(path, "rb") as fh:
            index = json.load(fh)
        shards = sorted(set(index.get("weight_map", {}).values()))
    else:
        return None

    def header(name: str) -> list[StoredTensor]:
        meta = api.parse_safetensors_file_metadata(ref.repo_id, name, revision=sha, timeout=settings.hub_timeout_s)
        return [StoredTensor(n, t.dtype, tuple(t.shape)) for n, t in meta.tensors.items()]

    with ThreadPoolExecutor(min(HEADER_REQUESTS, len(shards))) as pool:
        tensors = [t for shard in pool.map(header, shards) for t in shard]
    return Checkpoint.of(tensors, files=len(shards))


def search(text: str, limit: int, settings: Settings) -> list[str]:
    """Hub ids of models whose id contains ``text``, most downloaded first: the Hub's
    ``/api/models?search=`` (what ``HfApi.list_models`` asks) in one request within the time limit
    (``list_models`` retries a refused connection with backoff for about 20 s)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    token = settings.hub_token.get_secret_value() if settings.hub_token else None
    response = get_session().get(f"{settings.hub_endpoint}/api/models", headers=build_hf_headers(token=token),
                                 params={"search": text, "sort": "downloads", "direction": -1, "limit": limit},
                                 timeout=settings.hub_timeout_s)
    hf_raise_for_status(response)
    return [str(m["id"]) for m in response.json() if isinstance(m, dict) and "id" in m][:limit]
