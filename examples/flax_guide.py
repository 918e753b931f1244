"""Every section of the Flax guide "Convert PyTorch models to Flax", done by
jaxport instead of by hand: Linear, Conv, conv then Linear (the flatten
order), BatchNorm, and ConvTranspose. Each PyTorch layer is converted into its
NNX twin with one call and checked with jaxport.verify.

    python examples/flax_guide.py
"""

import numpy as np
import torch
from flax import nnx

import jaxport

rng = np.random.RandomState(0)


def linear():
    t = torch.nn.Linear(3, 4)
    j = jaxport.convert(t, nnx.Linear(3, 4, rngs=nnx.Rngs(0)))        # kernel transposed
    return jaxport.verify(t, j, rng.randn(1, 3).astype(np.float32))


def conv():
    t = torch.nn.Conv2d(3, 4, kernel_size=2, padding="valid")
    j = jaxport.convert(t, nnx.Conv(3, 4, kernel_size=(2, 2), padding="VALID", rngs=nnx.Rngs(0)))
    return jaxport.verify(t, j, rng.randn(1, 3, 6, 6).astype(np.float32))   # NCHW in, NHWC for JAX


class TModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 2, padding="valid")
        self.fc = torch.nn.Linear(100, 2)

    def forward(self, x):
        return self.fc(self.conv(x).reshape(x.shape[0], -1))


class JModel(nnx.Module):
    """The guide's Flax model, minus its transpose: the flatten rule moves the
    reordering into the Linear's kernel instead."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (2, 2), padding="VALID", rngs=rngs)
        self.linear = nnx.Linear(100, 2, rngs=rngs)

    def __call__(self, x):
        x = self.conv(x)
        return self.linear(x.reshape(x.shape[0], -1))


def conv_then_linear():
    t = TModel()
    j = jaxport.convert(t, JModel(nnx.Rngs(0)), flatten=(4, 5, 5))   # C, H, W of the flattened map
    return jaxport.verify(t, j, rng.randn(1, 3, 6, 6).astype(np.float32))


def batch_norm():
    t = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        t.running_mean.normal_(), t.running_var.uniform_(0.5, 2), t.weight.normal_()
    j = jaxport.convert(t, nnx.BatchNorm(3, use_running_average=True, rngs=nnx.Rngs(0)))
    return jaxport.verify(t, j, rng.randn(1, 3, 6, 6).astype(np.float32))


def conv_transpose():
    t = torch.nn.ConvTranspose2d(3, 4, kernel_size=2, padding=0)
    j = jaxport.convert(t, nnx.ConvTranspose(3, 4, (2, 2), padding="VALID", transpose_kernel=True,
                                             rngs=nnx.Rngs(0)))
    return jaxport.verify(t, j, rng.randn(1, 3, 6, 6).astype(np.float32))


if __name__ == "__main__":
    for case in (linear, conv, conv_then_linear, batch_norm, conv_transpose):
        report = case()
        print(f"{case.__name__:<17} max |diff| {report.max_abs:.2e}  ok")
