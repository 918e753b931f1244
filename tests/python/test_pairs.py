"""The matcher on real architecture pairs (tests/python/pairs.py): the
PyTorch checkpoint is paired with the Flax twin's params with no hints and no
renames, and the two models must give the same outputs."""

import pytest

pytest.importorskip("transformers")

import jaxport  # noqa: E402
from flax.traverse_util import unflatten_dict  # noqa: E402
from pairs import NAMES, Pair, relative_error  # noqa: E402
from planref import apply_plan  # noqa: E402


@pytest.mark.parametrize("name", NAMES)
def test_pair_converts_and_outputs_agree(name, tmp_path):
    import torch
    pair = Pair(name)
    path = tmp_path / f"{name}.pt"
    torch.save(pair.state_dict(), path)
    plan = jaxport.match(path, pair.params)
    assert plan.ok, plan.problems
    assert not [u for u in plan.unused if not u["harmless"]], plan.unused
    arrays = apply_plan(plan.data, plan.index)
    params = unflatten_dict({tuple(k.split("/")): v for k, v in arrays.items()})
    assert relative_error(pair.torch_output(), pair.flax_output(params)) < 1e-4
