"""The parameter count read from safetensors headers equals the estimator's, on checkpoints
transformers itself writes: a tiny model of every supported family saved with ``save_pretrained``,
served by the fake hub, read back header by header."""

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tests.fakehub import FakeHub, FakeRepo
from tunefit.app.core.config import Settings
from tunefit.app.hub.ids import HubRef
from tunefit.app.hub.resolver import HubResolver
from tunefit.app.hub.store import FolderStore
from tunefit.estimator import arch_from_config

torch = pytest.importorskip("torch", reason="needs the [profiler] extra")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

from tunefit.profiler.build import model_class  # noqa: E402

# one config per model_type: the families' own checkpoints differ in what they store
ONE_PER_FAMILY = sorted({c["model_type"]: name for name, c in sorted(TINY_CONFIGS.items())}.values())


def _saved_files(config: dict, folder) -> dict[str, bytes]:
    rest = {k: v for k, v in config.items() if k != "model_type"}
    model = model_class(config).from_config(transformers.AutoConfig.for_model(config["model_type"], **rest))
    model.save_pretrained(folder)  # safetensors, tied weights once, persistent buffers kept
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def saved_hub(tmp_path_factory):
    torch.manual_seed(0)
    repos = {f"tiny/{name}": FakeRepo(_saved_files(TINY_CONFIGS[name], tmp_path_factory.mktemp(name)))
             for name in ONE_PER_FAMILY}
    with FakeHub(repos).running() as fake:
        yield fake


@pytest.mark.parametrize("name", ONE_PER_FAMILY, ids=ONE_PER_FAMILY)
def test_checkpoint_params_equal_the_estimate(saved_hub, tmp_path, name):
    resolver = HubResolver(Settings(hub_endpoint=saved_hub.url), FolderStore(tmp_path))
    snapshot = resolver.resolve(HubRef(f"tiny/{name}")).snapshot
    assert snapshot.checkpoint is not None and snapshot.checkpoint.files == 1
    assert snapshot.checkpoint.params == arch_from_config(snapshot.config).total_params
