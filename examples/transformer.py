"""A PyTorch transformer encoder layer (nn.TransformerEncoderLayer: fused
in_proj attention, pre-norm) into a Flax linen block written with Flax's own
layers and automatic names. jaxport splits the fused q/k/v projection into
Flax's (embed, heads, head_dim) kernels and pairs Dense_0/Dense_1 and
LayerNorm_0/LayerNorm_1 by shape and creation order.

    python examples/transformer.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import linen as nn

import jaxport

E, HEADS, FF = 64, 8, 256


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(epsilon=1e-5)(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=E, out_features=E)(h, h)
        h = nn.LayerNorm(epsilon=1e-5)(x)
        return x + nn.Dense(E)(nn.relu(nn.Dense(FF)(h)))


def main():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, HEADS, FF, dropout=0.0, batch_first=True, norm_first=True).eval()
    like = Block().init(jax.random.key(0), jnp.zeros((1, 10, E)))
    plan = jaxport.match(layer, like)
    print(plan)
    params = jaxport.convert(layer, like)
    x = np.random.RandomState(0).randn(2, 10, E).astype(np.float32)
    print(jaxport.verify(layer, lambda x: Block().apply(params, x), x, rtol=1e-4, atol=1e-5))


if __name__ == "__main__":
    main()
