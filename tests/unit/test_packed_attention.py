"""Packed sequences on CPU: what `model.use_remove_padding: true` relies on without flash-attention.

With remove-padding on, verl's FSDP engine packs a micro-batch's rows into one sequence, passes
`attention_mask=None` and `use_cache=False` and restarts `position_ids` at 0 for each row
(`transformer_impl.prepare_model_inputs`).
On a GPU flash-attention's varlen kernel keeps the rows apart; on CPU it is transformers' SDPA attention,
which reads the row boundaries off the position ids (`masking_utils.find_packed_sequence_indices`) and builds a
block-diagonal causal mask. The CPU recipes keep it off because it measured slower on 2 cores
(`benchmarks/packed_sequences.py`, whose packed variants rely on this), but a recipe that turns it on (verl's
default, as in the GPU recipes) must not train on wrong log-probs when run on CPU: if a transformers upgrade
dropped the packed mask, packed rows would attend to each other without an error. This test catches it on the
two architectures the CPU recipes train (Llama: SmolLM2; Qwen2: the tiny test model).
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SIZES = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)


@pytest.mark.parametrize("arch", [(LlamaConfig, LlamaForCausalLM), (Qwen2Config, Qwen2ForCausalLM)],
                         ids=["llama", "qwen2"])
def test_packed_rows_match_rows_run_alone(arch):
    config_cls, model_cls = arch
    torch.manual_seed(0)
    model = model_cls(config_cls(**SIZES, attn_implementation="sdpa")).eval()
    rows = [torch.randint(0, SIZES["vocab_size"], (n,)) for n in (11, 5, 17)]

    with torch.no_grad():
        alone = [model(input_ids=r[None]).logits[0] for r in rows]
        packed_ids = torch.cat(rows)[None]
        positions = torch.cat([torch.arange(len(r)) for r in rows])[None]
        packed = model(input_ids=packed_ids, attention_mask=None, position_ids=positions, use_cache=False).logits[0]
        # The same packing with positions that run on (one long sequence): rows now see each other.
        leaked = model(input_ids=packed_ids, attention_mask=None,
                       position_ids=torch.arange(packed_ids.shape[1])[None], use_cache=False).logits[0]

    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-5)
    later_rows = slice(len(rows[0]), None)
    assert not torch.allclose(leaked[later_rows], torch.cat(alone)[later_rows], atol=1e-3)
