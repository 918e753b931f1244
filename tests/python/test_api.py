"""jaxport.convert / autoconvert / verify: one call from a PyTorch model to
the JAX object the user passed, for each target library, checked by outputs."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import jaxport
from jaxport import errors
from jaxfixtures import LinenNet
from torch_fixtures import TorchNet, randomise_bn

torch.manual_seed(0)


def trained():
    return randomise_bn(TorchNet())


X = np.random.RandomState(0).randn(2, 3, 6, 6).astype(np.float32)


def test_linen_variables_from_a_live_module_and_verify():
    tm = trained()
    before = {k: v.clone() for k, v in tm.state_dict().items()}
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    variables = jaxport.convert(tm, like)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(like)
    assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(variables))
    report = jaxport.verify(tm, lambda x: LinenNet().apply(variables, x), X, rtol=1e-4, atol=1e-5)
    assert report.ok and report.rows[0]["shape"] == (2, 4)
    # The source is read, never written (its memory is lent to the engine).
    assert all(torch.equal(before[k], v) for k, v in tm.state_dict().items())


def test_nnx_module_is_updated_in_place():
    from flax import nnx

    class N(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), padding=1, rngs=rngs)
            self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
            self.fc = nnx.Linear(8, 4, rngs=rngs)

        def __call__(self, x):
            return self.fc(nnx.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))

    tm = trained()
    model = N(nnx.Rngs(0))
    out = jaxport.convert(tm, model)
    assert out is model
    jaxport.verify(tm, model, X, rtol=1e-4, atol=1e-5)


def test_nnx_state_with_random_number_streams():
    # an nnx.State, not a module: its Dropout's key and count are no weights,
    # and come back as they were
    from flax import nnx

    class N(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), padding=1, rngs=rngs)
            self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
            self.drop = nnx.Dropout(0.5, deterministic=True, rngs=rngs)
            self.fc = nnx.Linear(8, 4, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.drop(nnx.relu(self.bn(self.conv(x))).mean(axis=(1, 2))))

    tm = trained()
    graph, state = nnx.split(N(nnx.Rngs(0)))
    key = state["drop"]["rngs"]["key"].get_value()
    out = jaxport.convert(tm, state)
    assert isinstance(out, nnx.State)
    assert jax.numpy.array_equal(jax.random.key_data(out["drop"]["rngs"]["key"].get_value()),
                                 jax.random.key_data(key))
    jaxport.verify(tm, nnx.merge(graph, out), X, rtol=1e-4, atol=1e-5)


class EqxNet(eqx.Module):
    conv: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    fc: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(3, 8, 3, padding=1, key=k1)
        self.bn = eqx.nn.BatchNorm(8, axis_name="batch", mode="ema", inference=True, momentum=0.9)  # PyTorch's 0.1
        self.fc = eqx.nn.Linear(8, 4, key=k2)

    def __call__(self, x, state):
        y, state = self.bn(self.conv(x), state)
        return self.fc(jax.nn.relu(y).mean(axis=(1, 2))), state


def test_equinox_autoconvert_fills_the_state():
    tm = trained()
    model = EqxNet(jax.random.key(0))
    model, state = jaxport.autoconvert(model, tm.state_dict())  # built directly: Equinox makes the State
    np.testing.assert_array_equal(np.asarray(state.get(model.bn.ema_state_index)[0]), tm.bn.running_mean.numpy())
    fn = jax.vmap(lambda x: model(x, state)[0])
    jaxport.verify(tm, fn, X, layout="same", rtol=1e-4, atol=1e-5)


def test_abstract_targets_are_filled_without_an_init():
    # Big models are described, not initialised: jax.eval_shape for linen,
    # eqx.filter_eval_shape for Equinox give ShapeDtypeStruct leaves.
    tm = trained()
    like = jax.eval_shape(LinenNet().init, jax.random.key(0), jax.ShapeDtypeStruct((1, 6, 6, 3), jnp.float32))
    variables = jaxport.convert(tm, like)
    assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(variables))
    jaxport.verify(tm, lambda x: LinenNet().apply(variables, x), X, rtol=1e-4, atol=1e-5)

    model, state = jaxport.convert(tm, eqx.filter_eval_shape(eqx.nn.make_with_state(EqxNet), jax.random.key(0)))
    assert not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves((model, state)))
    jaxport.verify(tm, jax.vmap(lambda x: model(x, state)[0]), X, layout="same", rtol=1e-4, atol=1e-5)


def test_equinox_batchnorm_trains_on_from_the_pytorch_statistics():
    # One training step in Equinox must move the running statistics as one
    # in PyTorch does (momentum 0.1 from the loaded ones), not replace them
    # with the batch's as Equinox does on a BatchNorm's first step.
    tm = trained()
    model, state = jaxport.convert(tm, eqx.nn.make_with_state(EqxNet)(jax.random.key(0)))
    model = eqx.nn.inference_mode(model, False)
    x = np.random.RandomState(1).randn(4, 3, 6, 6).astype(np.float32)
    _, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)
    tm.train()
    tm(torch.from_numpy(x))
    mean, var = state.get(model.bn.ema_state_index)
    np.testing.assert_allclose(np.asarray(mean), tm.bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)


def test_haiku_params_from_a_live_module():
    import haiku as hk

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc1, self.ln, self.fc2 = torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(self.ln(self.fc1(self.conv(x).relu().mean(dim=(2, 3)))).relu())

    def forward(x):
        x = jax.nn.relu(hk.Conv2D(8, 3, padding="SAME")(x)).mean(axis=(1, 2))
        x = hk.LayerNorm(-1, create_scale=True, create_offset=True, eps=1e-5)(hk.Linear(16)(x))
        return hk.Linear(4)(jax.nn.relu(x))

    net = hk.without_apply_rng(hk.transform(forward))
    like = net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    tm = T()
    params = jaxport.convert(tm, like)  # told from the names (w, b, offset)
    assert jaxport.match(tm, like).library == "haiku"
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(like)
    jaxport.verify(tm, lambda x: net.apply(params, x), X, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cin,cout", [(4, 6), (5, 5)])
def test_haiku_transposed_conv(cin, cout):
    # Haiku keeps (*k, O, I) and lax.conv_transpose does not flip it: the
    # kernel is torch's permuted and flipped, also when I == O
    import haiku as hk
    torch.manual_seed(cin)
    tm = torch.nn.Sequential(torch.nn.ConvTranspose2d(cin, cout, 3, stride=2),
                             torch.nn.ConvTranspose2d(cout, cout, (2, 3)))
    net = hk.without_apply_rng(hk.transform(
        lambda x: hk.Conv2DTranspose(cout, (2, 3), padding="VALID")(
            hk.Conv2DTranspose(cout, 3, stride=2, padding="VALID")(x))))
    x = np.random.default_rng(0).standard_normal((2, cin, 5, 6)).astype(np.float32)
    like = net.init(jax.random.key(0), x.transpose(0, 2, 3, 1))
    params = jaxport.convert(tm, like)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    got = np.asarray(net.apply(params, x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_haiku_params_and_batchnorm_state():
    import haiku as hk

    def forward(x, is_training):
        x = hk.BatchNorm(True, True, decay_rate=0.9, eps=1e-5)(hk.Conv2D(8, 3, padding="SAME")(x), is_training)
        return hk.Linear(4)(jax.nn.relu(x).mean(axis=(1, 2)))

    net = hk.transform_with_state(forward)
    like = net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)), True)
    tm = trained()
    params, state = jaxport.convert(tm, like)  # Haiku's (params, state)
    jaxport.verify(tm, lambda x: net.apply(params, state, None, x, False)[0], X, rtol=1e-4, atol=1e-5)
    # A training step moves the statistics on from PyTorch's, as PyTorch's
    # own step does (decay 0.9 is PyTorch's momentum 0.1).
    x = np.random.RandomState(1).randn(4, 3, 6, 6).astype(np.float32)
    _, state = net.apply(params, state, None, x.transpose(0, 2, 3, 1), True)
    tm.train()
    tm(torch.from_numpy(x))
    mean = state["batch_norm/~/mean_ema"]["average"].reshape(-1)
    np.testing.assert_allclose(np.asarray(mean), tm.bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)


def test_from_files_in_every_source_format(tmp_path):
    from safetensors.torch import save_file
    tm = trained()
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    torch.save(tm.state_dict(), tmp_path / "m.pt")
    sd = {k: v for k, v in tm.state_dict().items()}
    save_file(sd, tmp_path / "m.safetensors")
    a = jaxport.convert(tmp_path / "m.pt", like)
    b = jaxport.convert(tmp_path / "m.safetensors", like)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_dtype_casts_floats_only():
    tm = trained()
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    v = jaxport.convert(tm, like, dtype="bfloat16")
    assert {np.dtype(x.dtype) for x in jax.tree_util.tree_leaves(v)} == {np.dtype(jnp.bfloat16)}
    np.testing.assert_array_equal(np.asarray(v["params"]["Dense_0"]["bias"]),
                                  tm.fc.bias.detach().to(torch.bfloat16).float().numpy().astype(jnp.bfloat16))


def test_strict_refusal_names_the_leaf_and_lenient_keeps_like():
    class Wider(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = LinenNet()(x)
            return nn.Dense(2, name="extra_head")(x)

    tm = trained()
    like = Wider().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    with pytest.raises(errors.MatchError, match="extra_head/(kernel|bias)"):
        jaxport.convert(tm, like)
    v = jaxport.convert(tm, like, strict=False)
    np.testing.assert_array_equal(np.asarray(v["params"]["extra_head"]["kernel"]),
                                  np.asarray(like["params"]["extra_head"]["kernel"]))


def test_verify_fails_loudly():
    tm = trained()
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    with pytest.raises(jaxport.VerifyError, match="max \\|diff\\|"):
        jaxport.verify(tm, lambda x: LinenNet().apply(like, x), X)


def test_weights_left_behind_are_refused_unless_allowed():
    class Bigger(TorchNet):
        def __init__(self):
            super().__init__()
            self.aux = torch.nn.Linear(8, 3)  # a head the JAX model does not have

    tm = Bigger().eval()
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    with pytest.raises(errors.MatchError, match="aux.weight.*would be lost"):
        jaxport.convert(tm, like)
    v = jaxport.convert(tm, like, allow_unused=True)
    np.testing.assert_array_equal(np.asarray(v["params"]["Dense_0"]["bias"]), tm.fc.bias.detach().numpy())


def test_progress_callback_sees_every_byte():
    tm = trained()
    like = LinenNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 3)))
    calls = []
    jaxport.convert(tm, like, progress=lambda done, total, name: calls.append((done, total, name)))
    total = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(like))
    assert calls and calls[-1][:2] == (total, total)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    with pytest.raises(TypeError):
        jaxport.convert(tm, like, progress=3)
