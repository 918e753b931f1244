"""A ResNet-18 from Hugging Face transformers' PyTorch ResNetModel into its
Flax twin (FlaxResNetModel): convolutions to HWIO, BatchNorm statistics into
batch_stats, no hints. Random weights (nothing is downloaded); the PyTorch
model is run for a few batches in training mode first so its running
statistics are not the defaults.

    python examples/resnet.py
"""

import os
import warnings

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*TensorFlow and JAX classes are deprecated.*")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import FlaxResNetModel, ResNetConfig, ResNetModel  # noqa: E402

import jaxport  # noqa: E402


def main():
    config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                          embedding_size=64)
    torch.manual_seed(0)
    torch_model = ResNetModel(config).train()
    with torch.no_grad():
        for _ in range(3):
            torch_model(torch.randn(4, 3, 64, 64))
    torch_model.eval()
    flax_model = FlaxResNetModel(config, input_shape=(1, 64, 64, 3), seed=0)
    plan = jaxport.match(torch_model, flax_model.params)
    print(str(plan).splitlines()[-1])
    variables = jaxport.convert(torch_model, flax_model.params)

    def flax_forward(pixels):  # FlaxResNetModel takes NCHW pixels, as PyTorch does
        return flax_model(pixels, params=variables).pooler_output

    def torch_forward(pixels):
        return torch_model(pixels).pooler_output

    x = np.random.RandomState(0).randn(2, 3, 64, 64).astype(np.float32)
    print(jaxport.verify(torch_forward, flax_forward, x, layout="same", rtol=1e-4, atol=1e-4))


if __name__ == "__main__":
    main()
