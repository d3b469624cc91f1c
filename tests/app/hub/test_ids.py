"""How a request names a Hugging Face model: ``org/name``, ``@revision`` or a ``revision`` beside it."""

import pytest

from tunefit.app.hub.ids import HubRef, looks_like_hub_id, parse_hub_ref
from tunefit.estimator import EstimateError

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("name, revision, expected", [
    ("NousResearch/Hermes-3-Llama-3.1-8B", None, HubRef("NousResearch/Hermes-3-Llama-3.1-8B", "main")),
    ("Qwen/Qwen3-8B@v1.0", None, HubRef("Qwen/Qwen3-8B", "v1.0")),
    (f"Qwen/Qwen3-8B@{SHA}", None, HubRef("Qwen/Qwen3-8B", SHA)),
    ("Qwen/Qwen3-8B", "refs/pr/3", HubRef("Qwen/Qwen3-8B", "refs/pr/3")),
    ("Qwen/Qwen3-8B@dev", "dev", HubRef("Qwen/Qwen3-8B", "dev")),
], ids=["plain", "at-tag", "at-commit", "revision-field", "both-agree"])
def test_parses_ids_and_revisions(name, revision, expected):
    assert parse_hub_ref(name, revision) == expected


@pytest.mark.parametrize("name, revision, field", [
    ("Qwen/Qwen3-8B@dev", "main", "revision"),
    ("Qwen/Qwen3--8B", None, "model"),
    ("Qwen/../etc", None, "model"),
    ("Qwen/Qwen3-8B.", None, "model"),
    ("Qwen/Qwen 3", None, "model"),
    ("Qwen/Qwen3-8B@a..b", None, "revision"),
    ("Qwen/Qwen3-8B@" + "x" * 256, None, "revision"),
], ids=["revisions-disagree", "double-dash", "dot-dot", "trailing-dot", "space", "revision-dot-dot",
        "revision-too-long"])
def test_refuses_what_the_hub_would_not_name(name, revision, field):
    with pytest.raises(EstimateError) as err:
        parse_hub_ref(name, revision)
    assert err.value.field == field


@pytest.mark.parametrize("name, hub_like", [
    ("llama-3-8b", False), ("meta-llama/Meta-Llama-3-8B", True), ("org/name@main", True), ("a/b/c", False),
    ("", False),
], ids=["catalog-id", "hub-id", "with-revision", "path", "empty"])
def test_only_namespaced_ids_look_like_hub_ids(name, hub_like):
    assert looks_like_hub_id(name) is hub_like


def test_a_commit_is_pinned_and_a_branch_is_not():
    assert HubRef("a/b", SHA).pinned and not HubRef("a/b", "main").pinned
    assert str(HubRef("a/b", "main")) == "a/b" and str(HubRef("a/b", "v2")) == "a/b@v2"
