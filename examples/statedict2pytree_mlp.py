"""statedict2pytree's own example, an MLP with BatchNorm, into Equinox: the
model's weights and the BatchNorm running statistics (which Equinox keeps in
an eqx.nn.State) in one call. The fields need not be declared in PyTorch's
order: pairing is by names and shapes.

    python examples/statedict2pytree_mlp.py
"""

import equinox as eqx
import jax
import numpy as np
import torch

import jaxport


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.bn = torch.nn.BatchNorm1d(32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class EqxMLP(eqx.Module):
    fc2: eqx.nn.Linear    # declared out of PyTorch's order on purpose
    bn: eqx.nn.BatchNorm
    fc1: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.fc1 = eqx.nn.Linear(16, 32, key=k1)
        self.bn = eqx.nn.BatchNorm(32, axis_name="batch", mode="ema", inference=True)
        self.fc2 = eqx.nn.Linear(32, 10, key=k2)

    def __call__(self, x, state):
        y, state = self.bn(self.fc1(x), state)
        return self.fc2(jax.nn.relu(y)), state


def main():
    torch_mlp = TorchMLP()
    torch_mlp.train()
    with torch.no_grad():   # a few batches so the running statistics mean something
        for _ in range(5):
            torch_mlp(torch.randn(64, 16) * 3 + 1)
    torch_mlp.eval()
    model, state = eqx.nn.make_with_state(EqxMLP)(jax.random.key(0))
    model, state = jaxport.autoconvert((model, state), torch_mlp.state_dict())
    forward = jax.vmap(lambda x: model(x, state)[0])
    report = jaxport.verify(torch_mlp, forward, np.random.RandomState(0).randn(8, 16).astype(np.float32),
                            rtol=1e-4, atol=1e-5)
    print(report)


if __name__ == "__main__":
    main()
