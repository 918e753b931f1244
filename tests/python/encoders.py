"""A torch TransformerEncoder and the same layer in Equinox, shared by the
tests that convert one into the other (layer by layer, or stacked)."""

import equinox as eqx
import jax
import numpy as np
import torch

E, HEADS, FF = 16, 4, 32


def torch_encoder(layers):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, HEADS, FF, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()


def inputs():
    return np.random.default_rng(0).standard_normal((2, 5, E)).astype(np.float32)


def torch_out(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


class EqxLayer(eqx.Module):
    """torch's TransformerEncoderLayer (post-norm, ReLU) on one sequence."""
    attn: eqx.nn.MultiheadAttention
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    n1: eqx.nn.LayerNorm
    n2: eqx.nn.LayerNorm

    def __init__(self, key):
        k = jax.random.split(key, 3)
        self.attn = eqx.nn.MultiheadAttention(HEADS, E, use_query_bias=True, use_key_bias=True,
                                              use_value_bias=True, use_output_bias=True, key=k[0])
        self.l1, self.l2 = eqx.nn.Linear(E, FF, key=k[1]), eqx.nn.Linear(FF, E, key=k[2])
        self.n1, self.n2 = eqx.nn.LayerNorm(E), eqx.nn.LayerNorm(E)

    def __call__(self, x):
        x = jax.vmap(self.n1)(x + self.attn(x, x, x))
        return jax.vmap(self.n2)(x + jax.vmap(self.l2)(jax.nn.relu(jax.vmap(self.l1)(x))))
