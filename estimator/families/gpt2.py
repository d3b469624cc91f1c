"""GPT-2 (transformers 5.23 ``models/gpt2/modeling_gpt2.py``)."""

from __future__ import annotations

from ..spec import ArchSpec, LinearSpec, NormSpec
from .config import Config, ConfigClass, Family, read_shared

# transformers 5.23's GPT2Config: ``__init__`` defaults of the keys read here, and its attribute_map
# (transformers' names for four of its own).
GPT2 = ConfigClass("GPT2Config", dict(
    vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
    activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, tie_word_embeddings=True),
    attribute_map={"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                   "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"})


def build_gpt2(c: Config, model_type: str) -> ArchSpec:
    """gpt2: ``Conv1D`` layers with biases, LayerNorm, learned positions, tied head."""
    s = read_shared(c, intermediate="n_inner", act="activation_function", heads="mha", intermediate_factor=4)
    h, inter = s.hidden_size, s.intermediate_size
    return s.spec(
        model_type,
        gated_mlp=False,
        attention_dropout=c.probability("attn_pdrop"),
        softmax_fp32=False,
        hidden_dropout=c.probability("resid_pdrop"),
        embedding_dropout=c.probability("embd_pdrop"),
        layer_linears=(
            LinearSpec("c_attn", h, 3 * h, True, role="qkv"),
            LinearSpec("c_proj", h, h, True, role="o"),
            LinearSpec("c_fc", h, inter, True, role="mlp_in"),
            LinearSpec("c_proj", inter, h, True, role="mlp_out"),
        ),
        layer_norms=(NormSpec("layernorm", h, bias=True),) * 2,
        final_norm=NormSpec("layernorm", h, bias=True),
        position_embeddings=s.max_position_embeddings,
        attention_output_held=True,  # GPT2Block: ``attn_output, _ = self.attn(...)``, kept through the MLP
    )


FAMILIES = {"gpt2": Family(GPT2, build_gpt2)}
