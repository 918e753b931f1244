"""The matcher and executor on real architecture pairs (tests/python/pairs.py):
each PyTorch model is converted into its Flax twin's params with no hints and
no renames, and the two models must give the same outputs. Half the cases
read a torch.save checkpoint, half the live module's state dict."""

import numpy as np
import pytest

pytest.importorskip("transformers")

import jaxport  # noqa: E402
from pairs import NAMES, Pair, relative_error  # noqa: E402
from planref import apply_plan  # noqa: E402


@pytest.mark.parametrize("name", NAMES)
def test_pair_converts_and_outputs_agree(name, tmp_path):
    import torch
    from jaxport import trees
    pair = Pair(name)
    if NAMES.index(name) % 2:
        src = pair.torch_model
    else:
        src = tmp_path / f"{name}.pt"
        torch.save(pair.state_dict(), src)
    params, plan = jaxport.convert(src, pair.params, return_plan=True)
    assert plan.ok, plan.problems
    assert not [u for u in plan.unused if not u["harmless"]], plan.unused
    # The executor agrees with the numpy reading of the plan, bit for bit.
    want = apply_plan(plan.data, plan.index)
    got = dict(zip(*trees.flatten(params)))
    assert all(np.array_equal(np.asarray(got[k]), v) for k, v in want.items())
    assert relative_error(pair.torch_output(), pair.flax_output(params)) < 1e-4


def test_a_sinusoidal_position_table_is_left_over_only_when_it_is_one():
    """Marian keeps its sinusoidal position tables as weights; FlaxMarianModel
    computes them. They are left over as harmless, by their values: the same
    table with one element changed would be a loss, and is refused."""
    pair = Pair("marian")
    plan = jaxport.match(pair.torch_model, like=pair.params)
    tables = {u["tensor"] for u in plan.unused if "sinusoidal position table" in u["why"]}
    assert tables == {"encoder.embed_positions.weight", "decoder.embed_positions.weight"}
    assert all(u["harmless"] for u in plan.unused)  # the rest: embeddings tied to shared.weight
    sd = pair.state_dict()  # the shared embeddings stay tied
    sd["decoder.embed_positions.weight"] = sd["decoder.embed_positions.weight"].clone()
    sd["decoder.embed_positions.weight"][5, 3] += 0.01
    with pytest.raises(jaxport.errors.MatchError, match="decoder.embed_positions.weight"):
        jaxport.convert(sd, pair.params)


def test_a_head_tied_to_the_embeddings_pairs_by_its_own_bias():
    """DistilBERT's masked-LM head keeps vocab_projector.weight, tied to the
    word embeddings, and its bias; the Flax twin keeps only the bias and
    reuses the embeddings. The head module pairs with the tied copy left
    over, and the logits agree."""
    import jax.numpy as jnp
    import torch
    import transformers as tr
    config = tr.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=99)
    torch.manual_seed(0)
    model = tr.DistilBertForMaskedLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    twin = tr.FlaxDistilBertForMaskedLM(config)
    params, plan = jaxport.convert(model, twin.params, return_plan=True)
    left = {u["tensor"]: u for u in plan.unused}
    assert left["vocab_projector.weight"]["harmless"], left
    ids = np.array([[5, 7, 9, 11, 3, 2]])
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids)).logits.numpy()
    got = np.asarray(twin(input_ids=jnp.asarray(ids), params=params).logits)
    assert relative_error(want, got) < 1e-4


def test_an_old_checkpoints_position_ids_are_left_over():
    """Hugging Face checkpoints saved before transformers 4.31 keep
    embeddings.position_ids (0, 1, 2, ...); Flax models make theirs. The
    buffer is left over as harmless by its values, and the outputs agree;
    other integers of that shape would be a loss."""
    import torch
    pair = Pair("bert")
    sd = dict(pair.state_dict())
    sd["embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    params, plan = jaxport.convert(sd, pair.params, return_plan=True)
    left = {u["tensor"]: u for u in plan.unused}
    assert left["embeddings.position_ids"]["harmless"] and "position index" in left["embeddings.position_ids"]["why"]
    assert relative_error(pair.torch_output(), pair.flax_output(params)) < 1e-4
    sd["embeddings.position_ids"] = torch.arange(512).flip(0).unsqueeze(0)
    with pytest.raises(jaxport.errors.MatchError, match="embeddings.position_ids"):
        jaxport.convert(sd, pair.params)


def test_an_old_gpt2_checkpoints_masks_are_left_over():
    """GPT-2 checkpoints saved before transformers made the buffers
    non-persistent keep each layer's causal mask (attn.bias) and masking
    constant (attn.masked_bias); Flax's GPT-2 makes its own. They are left
    over as harmless, by their values, and the outputs agree."""
    import torch
    pair = Pair("gpt2")
    sd = dict(pair.state_dict())
    n = pair.torch_model.config.n_positions
    for i in range(pair.torch_model.config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    params, plan = jaxport.convert(sd, pair.params, return_plan=True)
    why = {u["tensor"]: u["why"] for u in plan.unused if u["harmless"]}
    assert "causal mask" in why["h.1.attn.bias"] and "masking constant (-10000)" in why["h.1.attn.masked_bias"]
    assert relative_error(pair.torch_output(), pair.flax_output(params)) < 1e-4
    sd["h.1.attn.bias"] = torch.ones(1, 1, n, n, dtype=torch.uint8)  # not causal: a loss
    with pytest.raises(jaxport.errors.MatchError, match="h.1.attn.bias"):
        jaxport.convert(sd, pair.params)
