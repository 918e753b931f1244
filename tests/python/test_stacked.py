"""Stacked layers: Flax's nn.scan and nnx.vmap, and Equinox's filter_vmap,
keep a model's repeated layers as one module whose leaves have a leading
layer axis; PyTorch keeps layers.0, layers.1, ... Each case converts a
torch TransformerEncoder (its fused attention split into query, key and
value too) with no hints and runs both models on the same input."""

import jax
import numpy as np
import pytest
import torch

import jaxport
from encoders import E, FF, HEADS, EqxLayer, inputs, torch_encoder, torch_out
from jaxport import errors
from planref import apply_plan

L = 3


def encoder():
    return torch_encoder(L)


def linen_model():
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            x = nn.LayerNorm(1e-5, name="norm1")(x + nn.MultiHeadDotProductAttention(HEADS, name="self_attn")(x, x))
            y = nn.Dense(E, name="linear2")(jax.nn.relu(nn.Dense(FF, name="linear1")(x)))
            return nn.LayerNorm(1e-5, name="norm2")(x + y), None

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=L)
            return scan(name="layers")(x, None)[0]
    return Model()


def test_linen_scan_from_a_checkpoint_and_a_mapping_file(tmp_path):
    tm, x = encoder(), inputs()
    path = tmp_path / "enc.pt"
    torch.save(tm.state_dict(), path)
    model = linen_model()
    like = model.init(jax.random.key(0), x)
    plan = jaxport.match(path, like)
    assert plan.ok and not plan.unused, (plan.problems, plan.unused)
    kernel = next(l for l in plan.leaves if l["leaf"].endswith("layers/linear1/kernel"))
    assert [p["tensor"] for p in kernel["from"]] == [f"layers.{i}.linear1.weight" for i in range(L)]
    assert kernel["rule"] == f"linear kernel (transposed); {L} layers stacked"
    f = tmp_path / "plan.json"
    plan.save(f)
    params = jaxport.convert(path, like, mapping=f)
    from jaxport import trees
    got = dict(zip(*trees.flatten(params)))
    assert all(np.array_equal(np.asarray(got[k]), v) for k, v in apply_plan(plan.data, plan.index).items())
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), torch_out(tm, x), atol=1e-5)


def test_nnx_vmap_and_scan():
    from flax import nnx

    class Layer(nnx.Module):
        def __init__(self, rngs):
            self.self_attn = nnx.MultiHeadAttention(HEADS, E, decode=False, rngs=rngs)
            self.linear1, self.linear2 = nnx.Linear(E, FF, rngs=rngs), nnx.Linear(FF, E, rngs=rngs)
            self.norm1 = nnx.LayerNorm(E, epsilon=1e-5, rngs=rngs)
            self.norm2 = nnx.LayerNorm(E, epsilon=1e-5, rngs=rngs)

        def __call__(self, x):
            x = self.norm1(x + self.self_attn(x))
            return self.norm2(x + self.linear2(jax.nn.relu(self.linear1(x))))

    class Model(nnx.Module):
        def __init__(self, rngs):
            @nnx.split_rngs(splits=L)
            @nnx.vmap(in_axes=(0,), out_axes=0)
            def make(r):
                return Layer(r)
            self.layers = make(rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def step(h, layer):
                return layer(h)
            return step(x, self.layers)

    tm, x = encoder(), inputs()
    model = jaxport.convert(tm, Model(nnx.Rngs(0)))
    np.testing.assert_allclose(np.asarray(model(x)), torch_out(tm, x), atol=1e-5)


def test_equinox_filter_vmap():
    import equinox as eqx

    class Model(eqx.Module):
        layers: EqxLayer

        def __init__(self, key):
            self.layers = eqx.filter_vmap(EqxLayer)(jax.random.split(key, L))

        def __call__(self, x):
            arrays, static = eqx.partition(self.layers, eqx.is_array)
            return jax.lax.scan(lambda h, a: (eqx.combine(a, static)(h), None), x, arrays)[0]

    tm, x = encoder(), inputs()
    model = jaxport.convert(tm, Model(jax.random.key(0)))
    np.testing.assert_allclose(np.asarray(jax.vmap(model)(x)), torch_out(tm, x), atol=1e-5)


def test_layers_that_differ_are_not_stacked():
    # a stack holds layers alike: widths 8, 8, 6 cannot make one
    import flax.linen as nn
    tm = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 6))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            dense = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=0, out_axes=0, axis_size=3)
            return dense(8)(x)

    like = Model().init(jax.random.key(0), np.zeros((3, 2, 8), np.float32))
    with pytest.raises(errors.MatchError, match="no source module fits"):
        jaxport.convert(tm, like)


def test_a_deep_stack_shows_its_first_and_last_layers():
    import flax.linen as nn
    tm = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(6)])

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return nn.Dense(4)(x), None

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=6)
            return scan()(x, None)[0]

    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    model = Model()
    params, plan = jaxport.convert(tm, model.init(jax.random.key(0), x), return_plan=True)
    assert "0.weight, 1.weight, ..., 5.weight (6 parts)" in str(plan)
    want = torch.from_numpy(x)
    with torch.no_grad():
        for layer in tm:
            want = layer(want)
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), want.numpy(), atol=1e-5)
