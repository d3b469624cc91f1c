"""Resolving Hub ids against the fake hub: what is read, stored and answered offline, and the
errors a user can act on."""

import time

import pytest

from tests.app.hub.conftest import HUB_TIMEOUT_S
from tests.app.hub.repos import catalog_config, checkpoint_files
from tests.fakehub import FakeHub, FakeRepo
from tunefit.app.core.config import Settings
from tunefit.app.hub.errors import HubGated, HubNotFound, HubUnavailable, NotACausalLM
from tunefit.app.hub.ids import HubRef
from tunefit.app.hub.resolver import HubResolver, names_hub_model
from tunefit.app.hub.store import FolderStore
from tunefit.estimator import arch_from_config, get_model, models

HERMES = "NousResearch/Hermes-3-Llama-3.1-8B"


def _resolver(url: str, folder, **settings) -> HubResolver:
    return HubResolver(Settings(hub_endpoint=url, hub_timeout_s=HUB_TIMEOUT_S, **settings), FolderStore(folder))


def test_a_fine_tune_is_read_with_its_commit_and_checkpoint(fake_hub, tmp_path):
    resolved = _resolver(fake_hub.url, tmp_path).resolve(HubRef(HERMES))
    snapshot = resolved.snapshot
    assert snapshot.sha == fake_hub.repos[HERMES].sha and snapshot.revision == "main"
    assert snapshot.config == catalog_config("llama-3.1-8b")
    # four shards named by the index, every header read; the parameters are the config's
    assert snapshot.checkpoint.files == 4
    assert snapshot.checkpoint.params == arch_from_config(snapshot.config).total_params
    assert snapshot.checkpoint.stored_bytes == 2 * snapshot.checkpoint.params  # bf16
    assert resolved.model()["source"]["reference"] == f"{HERMES}@{snapshot.sha}"


def test_a_catalog_models_hub_id_needs_no_network_but_its_revision_does(fake_hub, tmp_path):
    assert not names_hub_model(get_model("qwen2.5-0.5b").hf_repo)
    assert names_hub_model(get_model("qwen2.5-0.5b").hf_repo + "@main")
    assert names_hub_model("org/name", None) and not names_hub_model("qwen2.5-0.5b")
    resolver = _resolver(fake_hub.url, tmp_path)
    assert resolver.model_arg("qwen2.5-0.5b") == "qwen2.5-0.5b"
    checked = resolver.resolve(HubRef(get_model("qwen2.5-0.5b").hf_repo)).snapshot
    assert checked.checkpoint.params == get_model("qwen2.5-0.5b").arch.total_params


def test_a_pre_quantized_checkpoint_counts_its_packed_weights(fake_hub, tmp_path):
    snapshot = _resolver(fake_hub.url, tmp_path).resolve(HubRef("unsloth/Qwen2.5-0.5B-bnb-4bit")).snapshot
    assert snapshot.config["quantization_config"]["load_in_4bit"] is True
    assert snapshot.checkpoint.params == get_model("qwen2.5-0.5b").arch.total_params
    assert set(snapshot.checkpoint.params_by_dtype) == {"BF16", "U8"}
    assert snapshot.checkpoint.stored_bytes < snapshot.checkpoint.params  # under a byte a parameter


def test_a_repeated_query_answers_from_memory_and_store(tmp_path):
    fake = FakeHub({"org/tiny": FakeRepo(checkpoint_files(catalog_config("qwen2.5-0.5b")))})
    with fake.running():
        url = fake.url
        first = _resolver(url, tmp_path)
        sha = first.resolve(HubRef("org/tiny")).snapshot.sha
        asked = fake.repos["org/tiny"].requests
        first.resolve(HubRef("org/tiny"))  # the process remembers it
        _resolver(url, tmp_path).resolve(HubRef("org/tiny"))  # a new process reads the store
        assert fake.repos["org/tiny"].requests == asked
    # the hub gone: the commit (pinned) and the branch (within its refresh time) still answer
    again = _resolver(url, tmp_path)
    assert again.resolve(HubRef("org/tiny", sha)).snapshot.sha == sha
    assert again.resolve(HubRef("org/tiny")).stale is False


def test_offline_answers_the_stored_copy_and_says_it_is_stale(tmp_path):
    fake = FakeHub({"org/tiny": FakeRepo(checkpoint_files(catalog_config("qwen2.5-0.5b")))})
    with fake.running():
        url = fake.url
        sha = _resolver(url, tmp_path).resolve(HubRef("org/tiny")).snapshot.sha
    stale = _resolver(url, tmp_path, hub_refresh_s=0).resolve(HubRef("org/tiny"))
    assert stale.stale and stale.snapshot.sha == sha and stale.source()["stale"] is True
    offline = _resolver(url, tmp_path, hub_refresh_s=0, hub_offline=True).resolve(HubRef("org/tiny"))
    assert offline.stale and offline.snapshot.sha == sha
    with pytest.raises(HubUnavailable, match="offline"):
        _resolver(url, tmp_path / "empty", hub_offline=True).resolve(HubRef("org/tiny"))


def test_a_new_commit_is_read_once_the_refresh_time_has_passed(tmp_path):
    fake = FakeHub({"org/tiny": FakeRepo(checkpoint_files(catalog_config("qwen2.5-0.5b")))})
    with fake.running():
        old = _resolver(fake.url, tmp_path).resolve(HubRef("org/tiny")).snapshot.sha
        fake.repos["org/tiny"] = FakeRepo(checkpoint_files(catalog_config("qwen2.5-1.5b")))
        assert _resolver(fake.url, tmp_path).resolve(HubRef("org/tiny")).snapshot.sha == old
        new = _resolver(fake.url, tmp_path, hub_refresh_s=0).resolve(HubRef("org/tiny")).snapshot
        assert new.sha != old and new.config == catalog_config("qwen2.5-1.5b")
        # the old commit stays answerable by its hash
        assert _resolver(fake.url, tmp_path).resolve(HubRef("org/tiny", old)).snapshot.sha == old


@pytest.mark.parametrize("repo_id, error, words", [
    ("meta-llama/Llama-3.1-8B-Instruct", HubGated, "HF_TOKEN"),
    ("nope/Hermes-3-Llama-3.1-8", HubNotFound, HERMES),
    ("broken/garbage-config", NotACausalLM, "not JSON"),
    ("stabilityai/stable-diffusion-xl-base-1.0", NotACausalLM, "diffusers pipeline"),
    ("google-bert/bert-base-uncased", NotACausalLM, "BertForMaskedLM"),
], ids=["gated", "missing", "garbage-json", "diffusers", "encoder"])
def test_errors_name_the_id_and_what_to_do(fake_hub, tmp_path, repo_id, error, words):
    with pytest.raises(error) as err:
        _resolver(fake_hub.url, tmp_path).resolve(HubRef(repo_id))
    assert repo_id in str(err.value) and words in str(err.value)


def test_missing_suggests_close_catalog_and_hub_ids(fake_hub, tmp_path):
    with pytest.raises(HubNotFound) as err:
        _resolver(fake_hub.url, tmp_path).resolve(HubRef("meta-llama/Meta-Llama-3-8b-x"))
    assert "meta-llama/Meta-Llama-3-8B" in err.value.suggestions
    with pytest.raises(HubNotFound, match="revision 'v9'"):
        _resolver(fake_hub.url, tmp_path).resolve(HubRef(HERMES, "v9"))


def test_a_gated_repo_opens_with_the_token(fake_hub, tmp_path):
    resolver = _resolver(fake_hub.url, tmp_path, hub_token=fake_hub.token)
    assert resolver.resolve(HubRef("meta-llama/Llama-3.1-8B-Instruct")).snapshot.config["model_type"] == "llama"
    with pytest.raises(HubGated, match="has not been granted"):
        _resolver(fake_hub.url, tmp_path / "other", hub_token="hf_someone_else").resolve(
            HubRef("meta-llama/Llama-3.1-8B-Instruct"))


def test_a_slow_hub_is_an_error_within_its_time_limit(fake_hub, tmp_path):
    started = time.monotonic()
    with pytest.raises(HubUnavailable, match=f"within {HUB_TIMEOUT_S:g} s"):
        _resolver(fake_hub.url, tmp_path).resolve(HubRef("slow/Llama-3.1-8B-Slow"))
    # one request timed out: well under the repo's own delay (SLOW_FACTOR times the limit)
    assert time.monotonic() - started < fake_hub.repos["slow/Llama-3.1-8B-Slow"].delay_s


def test_an_unreachable_hub_is_an_error_naming_it(tmp_path):
    with pytest.raises(HubUnavailable, match="could not be reached"):
        _resolver("http://127.0.0.1:9", tmp_path).resolve(HubRef("org/anything"))


def test_hub_ids_can_be_turned_off(fake_hub, tmp_path):
    with pytest.raises(Exception, match="TUNEFIT_ALLOW_HUB"):
        _resolver(fake_hub.url, tmp_path, allow_hub=False).resolve(HubRef(HERMES))


def test_search_lists_hub_ids_most_downloaded_first(fake_hub, tmp_path):
    assert _resolver(fake_hub.url, tmp_path).search("Llama-3.1-8B")[:2] == [
        "meta-llama/Llama-3.1-8B-Instruct", HERMES]
    assert _resolver("http://127.0.0.1:9", tmp_path).search("llama", quiet=True) == []


def test_every_catalog_config_read_from_the_hub_estimates_as_the_catalog(tmp_path):
    """Each catalog model's published config.json, served by the fake hub under another id (a
    fine-tune), reads back to the catalog's architecture and its headers to its parameter count."""
    repos = {f"mirror/{m.id}": FakeRepo(checkpoint_files(catalog_config(m.id))) for m in models().values()}
    with FakeHub(repos).running() as fake:
        resolver = _resolver(fake.url, tmp_path)
        for m in models().values():
            snapshot = resolver.resolve(HubRef(f"mirror/{m.id}")).snapshot
            assert arch_from_config(snapshot.config) == m.arch, m.id
            assert snapshot.checkpoint.params == m.arch.total_params, m.id
