"""The matcher's conventions, each checked by running the PyTorch layer and
the JAX layer on the same input with the paired weights; its refusals
(ambiguity, missing layers, stale or hostile mapping files); hints, rename
rules and the ordered mode."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import jaxport
from jaxport import errors
from planref import apply_plan
from torch_fixtures import randomise_bn

torch.manual_seed(0)


def save(module, tmp_path, name="m.pt"):
    path = tmp_path / name
    torch.save(module.state_dict(), path)
    return path


def tree_from(plan, like):
    """The target filled by the executor running `plan`, checked against the
    numpy reading of the same plan."""
    out = jaxport.convert(plan.index, like, mapping=plan, to=plan.library)
    want = apply_plan(plan.data, plan.index)
    from jaxport import trees
    got = dict(zip(*trees.flatten(out[0] if isinstance(out, tuple) else out)))
    for name, a in want.items():
        assert np.array_equal(np.asarray(got[name]), a), name
    return out


def close(a, b, tol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max() <= tol * (1 + np.abs(a).max())


# ---------------------------------------------------------------- Flax linen

class TorchCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 6, 3)
        self.bn2 = torch.nn.BatchNorm2d(6)
        self.fc1 = torch.nn.Linear(6 * 4 * 4, 32)
        self.fc2 = torch.nn.Linear(32, 32)
        self.fc3 = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        x = self.bn2(self.conv2(x)).relu()
        x = x.reshape(x.shape[0], -1)
        return self.fc3(self.fc2(self.fc1(x).relu()).relu())


class FlaxCNN(nn.Module):
    @nn.compact
    def __call__(self, x):  # NHWC, flattened as NHWC: needs the flatten rule
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(8, (3, 3), padding="VALID")(x)))
        x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(6, (3, 3), padding="VALID")(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


def test_conv_batchnorm_and_the_flatten_rule(tmp_path):
    tm = randomise_bn(TorchCNN())
    x = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
    like = FlaxCNN().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    path = save(tm, tmp_path)
    plan = jaxport.match(path, like, flatten=(6, 4, 4))
    assert plan.ok, plan.problems
    rules = {l["leaf"]: l["rule"] for l in plan.leaves}
    assert rules["params/Conv_0/kernel"].startswith("conv kernel")
    assert "NCHW flatten" in rules["params/Dense_0/kernel"]
    assert rules["params/Dense_1/kernel"] == "linear kernel (transposed)"
    assert [u["tensor"] for u in plan.unused] == ["bn1.num_batches_tracked", "bn2.num_batches_tracked"]
    assert all(u["harmless"] for u in plan.unused)
    want = tm(torch.from_numpy(x)).detach().numpy()
    got = FlaxCNN().apply(tree_from(plan, like), jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert close(want, got)
    # Without the rule the pairing is the same but the first Dense is wrong.
    plain = jaxport.match(path, like)
    assert plain.ok
    assert not close(want, FlaxCNN().apply(tree_from(plain, like), jnp.asarray(x.transpose(0, 2, 3, 1))))


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("cin,cout", [(3, 4), (4, 4)])
def test_conv_transpose(tmp_path, transpose_kernel, cin, cout):
    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(cin, cout, 3, stride=2)

        def forward(self, x):
            return self.up(x)

    class F(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.ConvTranspose(cout, (3, 3), strides=(2, 2), padding="VALID",
                                    transpose_kernel=transpose_kernel)(x)

    tm = T().eval()
    x = np.random.RandomState(1).randn(1, cin, 5, 5).astype(np.float32)
    like = F().init(jax.random.key(0), jnp.zeros((1, 5, 5, cin)))
    plan = jaxport.match(save(tm, tmp_path), like)
    assert plan.ok, plan.problems
    got = np.asarray(F().apply(tree_from(plan, like), jnp.asarray(x.transpose(0, 2, 3, 1))))
    want = tm(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    if cin == cout and transpose_kernel:
        # A square kernel fits both layouts; the Flax default (flipped) is
        # assumed for a module named ConvTranspose, and the rule says so.
        rule = plan.leaves[1]["rule"] if plan.leaves[1]["leaf"].endswith("kernel") else plan.leaves[0]["rule"]
        assert "transpose_kernel=False is assumed" in rule
        return
    assert close(want, got)


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_nnx_square_conv_transpose_says_which_kernel_it_keeps(transpose_kernel):
    # where a linen kernel's shape cannot tell, an NNX layer's attribute does
    from flax import nnx
    tm = torch.nn.ConvTranspose2d(4, 4, 3, stride=2).eval()
    model = jaxport.convert(tm, nnx.ConvTranspose(4, 4, (3, 3), strides=(2, 2), padding="VALID",
                                                  transpose_kernel=transpose_kernel, rngs=nnx.Rngs(0)))
    x = np.random.RandomState(1).randn(1, 4, 5, 5).astype(np.float32)
    want = tm(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    assert close(want, np.asarray(model(jnp.asarray(x.transpose(0, 2, 3, 1)))))


def test_embedding_is_not_transposed_even_beside_a_linear_of_its_shape(tmp_path):
    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 32)
            self.proj = torch.nn.Linear(32, 10, bias=False)

        def forward(self, ids):
            return self.proj(self.emb(ids))

    class F(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return nn.Dense(10, use_bias=False)(nn.Embed(10, 32)(ids))

    tm = T().eval()
    ids = np.array([[1, 2, 3, 9]])
    like = F().init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    plan = jaxport.match(save(tm, tmp_path), like)
    assert plan.ok, plan.problems
    src = {l["leaf"]: l["from"][0]["tensor"] for l in plan.leaves}
    assert src == {"params/Embed_0/embedding": "emb.weight", "params/Dense_0/kernel": "proj.weight"}
    assert close(tm(torch.from_numpy(ids)).detach().numpy(), F().apply(tree_from(plan, like), jnp.asarray(ids)))


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(16)
        self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        self.gn = torch.nn.GroupNorm(4, 16)

    def forward(self, x):
        h = self.norm(x)
        h = x + self.attn(h, h, h, need_weights=False)[0]
        return self.gn(h.transpose(1, 2)).transpose(1, 2)


class FlaxBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(epsilon=1e-5)(x)
        h = x + nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=16, out_features=16)(h, h)
        return nn.GroupNorm(num_groups=4, epsilon=1e-5)(h)


def test_fused_attention_is_split_into_query_key_value(tmp_path):
    tm = TorchBlock().eval()
    with torch.no_grad():
        for p in tm.parameters():
            p.normal_(0, 0.3)
    x = np.random.RandomState(2).randn(2, 5, 16).astype(np.float32)
    like = FlaxBlock().init(jax.random.key(0), jnp.zeros((1, 5, 16)))
    plan = jaxport.match(save(tm, tmp_path), like)
    assert plan.ok, plan.problems
    q = next(l for l in plan.leaves if l["leaf"].endswith("query/kernel"))
    assert q["from"][0] == {"tensor": "attn.in_proj_weight", "slice": [0, 0, 16], "shape": [4, 4, 16]}
    assert close(tm(torch.from_numpy(x)).detach().numpy(), FlaxBlock().apply(tree_from(plan, like), jnp.asarray(x)))


def test_a_fused_tensor_taken_in_part_is_reported(tmp_path):
    # A target with no value projection takes two thirds of in_proj: the
    # rest would be lost, so the plan says which rows and convert refuses
    # unless told to leave them.
    like = FlaxBlock().init(jax.random.key(0), jnp.zeros((1, 5, 16)))
    attn = like["params"]["MultiHeadDotProductAttention_0"]
    del attn["value"]
    plan = jaxport.match(save(TorchBlock(), tmp_path), like)
    lost = {u["tensor"]: u["why"] for u in plan.unused if not u["harmless"]}
    assert lost == {"attn.in_proj_weight": "only partly taken: no leaf takes [32, 48) of its axis 0 (of 48)",
                    "attn.in_proj_bias": "only partly taken: no leaf takes [32, 48) of its axis 0 (of 48)"}
    with pytest.raises(errors.MatchError, match="in_proj_weight"):
        jaxport.convert(save(TorchBlock(), tmp_path), like)
    out = jaxport.convert(save(TorchBlock(), tmp_path), like, allow_unused=True)
    assert "value" not in out["params"]["MultiHeadDotProductAttention_0"]


def test_tied_weights_are_reported_not_fatal(tmp_path):
    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(12, 8)
            self.lm_head = torch.nn.Linear(8, 12, bias=False)
            self.lm_head.weight = self.wte.weight

    class F(nn.Module):
        @nn.compact
        def __call__(self, ids):
            e = nn.Embed(12, 8, name="wte")
            return e.attend(e(ids))

    like = F().init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))
    plan = jaxport.match(save(T(), tmp_path), like)
    assert plan.ok
    (u,) = plan.unused
    assert u["tensor"] == "lm_head.weight" and u["harmless"] and "tied to wte.weight" in u["why"]


class TwoLinears(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 8)


def two_dense(names):
    class F(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(8, name=names[1])(nn.Dense(8, name=names[0])(x))
    return F().init(jax.random.key(0), jnp.zeros((1, 8)))


def test_look_alike_layers_with_unrelated_names_are_ambiguous_until_hinted(tmp_path):
    path = save(TwoLinears(), tmp_path)
    like = two_dense(["x", "y"])
    plan = jaxport.match(path, like)
    assert not plan.ok
    leaf, why = plan.problems[0]
    assert ": a, b (pass a hint SRC=" in why
    hinted = jaxport.match(path, like, hints=["a=x", "b=y"])
    assert hinted.ok
    assert {l["leaf"]: l["from"][0]["tensor"] for l in hinted.leaves}["params/y/kernel"] == "b.weight"
    # a hint that names nothing is an error that says what is there, not
    # a hint dropped without a word
    for hint, msg in (("c=x", 'hint "c=x": the checkpoint has no module c (hints name modules, not tensors; '
                                "its modules start with a, b)"),
                      ("a.weight=x", "the checkpoint has no module a.weight"),
                      ("a=params/x", "the target has no module params/x (hints name modules, not tensors; "
                                     "its modules start with x, y)"),
                      ("a", 'hint "a" is not SRC=DST')):
        with pytest.raises(errors.ArgumentError) as e:
            jaxport.match(path, like, hints=["b=y", hint])
        assert msg in str(e.value)


def test_numbered_flax_names_pair_in_creation_order_past_ten(tmp_path):
    seq = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(12)])

    class F(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(12):
                x = nn.Dense(4)(x)
            return x

    like = F().init(jax.random.key(0), jnp.zeros((1, 4)))
    plan = jaxport.match(save(seq, tmp_path), like)
    assert plan.ok
    src = {l["leaf"]: l["from"][0]["tensor"] for l in plan.leaves}
    assert src["params/Dense_10/kernel"] == "10.weight" and src["params/Dense_2/kernel"] == "2.weight"
    x = np.random.RandomState(3).randn(2, 4).astype(np.float32)
    assert close(seq(torch.from_numpy(x)).detach().numpy(), F().apply(tree_from(plan, like), jnp.asarray(x)))


def test_rename_rules(tmp_path):
    path = save(TwoLinears(), tmp_path)
    renamed = jaxport.match(path, two_dense(["x", "y"]), rules={r"^a\.": "x.", r"^b\.": "y."})
    assert renamed.ok
    assert {l["leaf"]: l["from"][0]["tensor"] for l in renamed.leaves}["params/y/kernel"] == "b.weight"
    with pytest.raises(errors.ArgumentError):
        jaxport.match(path, two_dense(["x", "y"]), rules={"(": "x"})


def test_ordered_mode_pairs_leaf_by_leaf_as_statedict2pytree_does(tmp_path):
    import equinox as eqx
    path = save(TwoLinears(), tmp_path)
    mlp = eqx.nn.MLP(8, 8, 8, depth=1, key=jax.random.key(0))  # layers/0, layers/1: weight, bias each
    plan = jaxport.match(path, mlp, ordered=True)
    assert plan.ok
    assert [l["from"][0]["tensor"] for l in plan.leaves] == ["a.weight", "a.bias", "b.weight", "b.bias"]
    # Flax sorts bias before kernel, so the same order fails, and says where.
    flax_plan = jaxport.match(path, two_dense(["x", "y"]), ordered=True)
    assert "ordered: the next source, a.weight (8, 8), cannot become (8,)" in dict(flax_plan.problems)["params/x/bias"]


def test_norms_told_apart_by_abbreviation(tmp_path):
    tm = TorchBlock().eval()
    like = FlaxBlock().init(jax.random.key(0), jnp.zeros((1, 5, 16)))
    plan = jaxport.match(save(tm, tmp_path), like)
    src = {l["leaf"]: l["from"][0]["tensor"] for l in plan.leaves}
    assert src["params/GroupNorm_0/scale"] == "gn.weight" and src["params/LayerNorm_0/scale"] == "norm.weight"


def test_a_missing_layer_is_named_with_the_closest_source(tmp_path):
    path = save(TwoLinears(), tmp_path)

    class F(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="head")(nn.Dense(8, name="a")(x))

    plan = jaxport.match(path, F().init(jax.random.key(0), jnp.zeros((1, 8))))
    problems = dict(plan.problems)
    assert "no source module fits" in problems["params/head/kernel"]
    assert not [u for u in plan.unused if u["harmless"]]


def test_a_module_that_does_not_fit_is_shown_beside_the_closest_source():
    # Equinox's RMSNorm has a bias by default; torch's has none. No zeros are
    # made up: the problem shows both modules' leaves.
    import equinox as eqx
    tm = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.RMSNorm(6))
    like = eqx.nn.Sequential([eqx.nn.Linear(4, 6, key=jax.random.key(0)), eqx.nn.RMSNorm(6)])
    problems = dict(jaxport.match(tm, like).problems)
    assert problems["layers/1/weight"] == ("no source module fits [weight (6,), bias (6,)]; "
                                           "the closest by name is 1 [weight (6,)]")


@pytest.mark.parametrize("lib", ["linen", "nnx", "equinox"])
def test_prelu_slope(lib):
    # torch's PReLU weight (1,) is Flax's negative_slope () and Equinox's (1,)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.PReLU(init=0.1))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    if lib == "linen":
        class F(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.PReLU()(nn.Dense(6)(x))
        params = jaxport.convert(tm, F().init(jax.random.key(0), x))
        got = F().apply(params, x)
    elif lib == "nnx":
        from flax import nnx
        model = jaxport.convert(tm, nnx.Sequential(nnx.Linear(4, 6, rngs=nnx.Rngs(0)), nnx.PReLU()))
        got = model(x)
    else:
        import equinox as eqx
        linear, prelu = jaxport.convert(tm, [eqx.nn.Linear(4, 6, key=jax.random.key(0)), eqx.nn.PReLU()])
        got = jax.vmap(lambda v: prelu(linear(v)))(x)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)


class TorchWindowAttention(torch.nn.Module):
    """Swin's window attention as torchvision writes it: a learned relative
    position bias table, indexed by a buffer made from the window size."""

    def __init__(self, dim=8, heads=2, window=(2, 3)):
        super().__init__()
        wh, ww = window
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.relative_position_bias_table = torch.nn.Parameter(torch.randn((2 * wh - 1) * (2 * ww - 1), heads))
        coords = torch.flatten(torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")), 1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += wh - 1
        rel[:, :, 1] += ww - 1
        rel[:, :, 0] *= 2 * ww - 1
        self.register_buffer("relative_position_index", rel.sum(-1))

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        a = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5 + bias.permute(2, 0, 1)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class FlaxWindowAttention(nn.Module):
    dim: int = 8
    heads: int = 2
    window: tuple = (2, 3)

    @nn.compact
    def __call__(self, x):
        wh, ww = self.window
        table = self.param("relative_position_bias_table", nn.initializers.normal(0.02),
                           ((2 * wh - 1) * (2 * ww - 1), self.heads))
        h, w = np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")
        h, w = h.ravel(), w.ravel()
        index = (h[:, None] - h[None, :] + wh - 1) * (2 * ww - 1) + (w[:, None] - w[None, :] + ww - 1)
        b, n, d = x.shape
        qkv = nn.Dense(3 * self.dim, name="qkv")(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)
        bias = table[index.reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)
        a = jax.nn.softmax(q @ k.swapaxes(-2, -1) * (d // self.heads) ** -0.5 + bias, -1)
        return nn.Dense(self.dim, name="proj")((a @ v).swapaxes(1, 2).reshape(b, n, d))


def test_a_window_relative_position_index_is_left_over(tmp_path):
    """Swin keeps its relative position index as a buffer; a Flax Swin makes
    it from the window size. It is left over as harmless, by its values, and
    the outputs agree; an index for another window would be a loss."""
    tm = TorchWindowAttention().eval()
    x = np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32)
    like = FlaxWindowAttention().init(jax.random.key(0), x)
    path = save(tm, tmp_path)
    params, plan = jaxport.convert(path, like, return_plan=True)
    assert [(u["tensor"], u["harmless"]) for u in plan.unused] == [("relative_position_index", True)]
    assert "relative position index" in plan.unused[0]["why"]
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(FlaxWindowAttention().apply(params, x)), want, atol=1e-5)
    state = tm.state_dict()
    state["relative_position_index"] = state["relative_position_index"].T.contiguous()
    with pytest.raises(errors.MatchError, match="relative_position_index"):
        jaxport.convert(state, like)


# ---------------------------------------------------------------- mapping files

def test_mapping_file_round_trip_edit_and_staleness(tmp_path):
    path = save(TwoLinears(), tmp_path)
    like = two_dense(["x", "y"])
    plan = jaxport.match(path, like, hints=["a=x", "b=y"])
    f = tmp_path / "plan.json"
    plan.save(f)
    again = jaxport.match(path, like, mapping=f)
    assert again.leaves == plan.leaves
    # A person swaps the two layers by hand: the edit is kept.
    data = json.loads(f.read_text())
    for leaf in data["leaves"]:
        t = leaf["from"][0]["tensor"]
        leaf["from"][0]["tensor"] = ("b" if t[0] == "a" else "a") + t[1:]
    f.write_text(json.dumps(data))
    swapped = jaxport.match(path, like, mapping=f)
    assert {l["leaf"]: l["from"][0]["tensor"] for l in swapped.leaves}["params/x/kernel"] == "b.weight"
    with pytest.raises(errors.StaleError):
        jaxport.match(path, two_dense(["x", "z"]), mapping=f)


@pytest.mark.parametrize("edit,error", [
    (lambda l: l.update(permute=[0, 0]), errors.CorruptError),
    (lambda l: l.update(permute=[5, 1]), errors.CorruptError),
    (lambda l: l["from"][0].update(tensor="nope.weight"), errors.NotFoundError),
    (lambda l: l["from"][0].update(slice=[0, 4, 8]), errors.CorruptError),
    (lambda l: l["from"][0].update(slice=[9, 0, 1]), errors.CorruptError),
    (lambda l: l["from"][0].update(shape=[8, 9]), errors.CorruptError),
    (lambda l: l["from"][0].update(shape=[2 ** 62, 2 ** 62]), errors.CorruptError),
    (lambda l: l.update(flip=[7]), errors.CorruptError),
    (lambda l: l.update(dtype="F99"), errors.CorruptError),
    (lambda l: l.update(shape=[1, 2]), errors.CorruptError),
    (lambda l: l.update(**{"from": []}), errors.CorruptError),
])
def test_hostile_mapping_files_are_refused(tmp_path, edit, error):
    path = save(TwoLinears(), tmp_path)
    like = two_dense(["x", "y"])
    f = tmp_path / "plan.json"
    jaxport.match(path, like, hints=["a=x", "b=y"]).save(f)
    data = json.loads(f.read_text())
    edit(next(l for l in data["leaves"] if l["leaf"].endswith("kernel")))
    f.write_text(json.dumps(data))
    with pytest.raises(error):
        jaxport.match(path, like, mapping=f)


def test_not_a_plan(tmp_path):
    path = save(TwoLinears(), tmp_path)
    f = tmp_path / "plan.json"
    for text, error in [("{", errors.FormatError), ("[]", errors.FormatError),
                        ('{"jaxport_plan": 9, "leaves": []}', errors.UnsupportedError)]:
        f.write_text(text)
        with pytest.raises(error):
            jaxport.match(path, two_dense(["x", "y"]), mapping=f)


# ---------------------------------------------------------------- NNX and Equinox

def test_nnx_module(tmp_path):
    from flax import nnx

    class N(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), padding="VALID", rngs=rngs)
            self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
            self.linear = nnx.Linear(8, 5, rngs=rngs)

        def __call__(self, x):
            return self.linear(self.bn(self.conv(x)).mean(axis=(1, 2)))

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.bn = torch.nn.BatchNorm2d(8)
            self.linear = torch.nn.Linear(8, 5)

        def forward(self, x):
            return self.linear(self.bn(self.conv(x)).mean(dim=(2, 3)))

    tm = randomise_bn(T())
    model = N(nnx.Rngs(0))
    plan = jaxport.match(save(tm, tmp_path), model)
    assert plan.library == "nnx" and plan.ok, plan.problems
    model = tree_from(plan, model)
    x = np.random.RandomState(4).randn(2, 3, 6, 6).astype(np.float32)
    assert close(tm(torch.from_numpy(x)).detach().numpy(), model(jnp.asarray(x.transpose(0, 2, 3, 1))))


def test_equinox_conv_bias_transposed_conv_and_attention(tmp_path):
    import equinox as eqx

    class E(eqx.Module):
        conv: eqx.nn.Conv2d
        up: eqx.nn.ConvTranspose2d
        attn: eqx.nn.MultiheadAttention
        head: eqx.nn.Linear

        def __init__(self, key):
            k = jax.random.split(key, 4)
            self.conv = eqx.nn.Conv2d(3, 4, 3, key=k[0])
            self.up = eqx.nn.ConvTranspose2d(4, 4, 3, stride=2, key=k[1])
            self.attn = eqx.nn.MultiheadAttention(4, 4, use_query_bias=True, use_key_bias=True,
                                                  use_value_bias=True, use_output_bias=True, key=k[2])
            self.head = eqx.nn.Linear(4, 2, key=k[3])

        def __call__(self, x):  # x: (3, H, W), unbatched
            h = self.up(self.conv(x))
            seq = h.reshape(4, -1).T
            return jax.vmap(self.head)(self.attn(seq, seq, seq))

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.up = torch.nn.ConvTranspose2d(4, 4, 3, stride=2)
            self.attn = torch.nn.MultiheadAttention(4, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            h = self.up(self.conv(x))
            seq = h.reshape(h.shape[0], 4, -1).transpose(1, 2)
            return self.head(self.attn(seq, seq, seq, need_weights=False)[0])

    tm = T().eval()
    model = E(jax.random.key(0))
    plan = jaxport.match(save(tm, tmp_path), model)
    assert plan.library == "equinox" and plan.ok, plan.problems
    model = tree_from(plan, model)
    x = np.random.RandomState(5).randn(3, 6, 6).astype(np.float32)
    want = tm(torch.from_numpy(x[None]))[0].detach().numpy()
    assert close(want, model(jnp.asarray(x)), 1e-4)


def test_transformer_encoder_to_a_list_of_equinox_layers():
    # a plain list of Equinox modules is an Equinox target (its dropout
    # rates, Python numbers, stay as they are)
    from encoders import EqxLayer, inputs, torch_encoder, torch_out
    tm, x = torch_encoder(2), inputs()
    layers = jaxport.convert(tm, [EqxLayer(k) for k in jax.random.split(jax.random.key(0), 2)])
    assert isinstance(layers, list) and layers[0].attn.dropout.p == 0.0
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda v: layers[1](layers[0](v)))(x)), torch_out(tm, x),
                               atol=1e-5)


def test_equinox_batchnorm_statistics_come_from_the_state(tmp_path):
    """statedict2pytree's case: an MLP with BatchNorm into Equinox, running
    statistics into the eqx.nn.State beside the model."""
    import equinox as eqx
    from jaxport.match import eqx_state_leaves

    class T(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 8)
            self.bn = torch.nn.BatchNorm1d(8)
            self.fc2 = torch.nn.Linear(8, 3)

    class E(eqx.Module):
        fc1: eqx.nn.Linear
        bn: eqx.nn.BatchNorm
        fc2: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.fc1 = eqx.nn.Linear(6, 8, key=k1)
            self.bn = eqx.nn.BatchNorm(8, axis_name="batch", mode="ema", inference=True)
            self.fc2 = eqx.nn.Linear(8, 3, key=k2)

    tm = randomise_bn(T())
    model, state = eqx.nn.make_with_state(E)(jax.random.key(0))
    plan = jaxport.match(save(tm, tmp_path), (model, state))
    assert plan.library == "equinox" and plan.ok, plan.problems
    src = {l["leaf"]: l["from"][0]["tensor"] for l in plan.leaves}
    assert src["bn/running_mean"] == "bn.running_mean" and src["bn/weight"] == "bn.weight"
    assert [n for n, _ in eqx_state_leaves(model, state)] == ["bn/running_mean", "bn/running_var"]


# ---------------------------------------------------------------- the command line

def _cli(*args):
    import subprocess
    from jaxfixtures import cli_tool
    return subprocess.run([cli_tool(), *map(str, args)], capture_output=True, text=True)


def test_cli_match_and_convert_like_a_template(tmp_path):
    import flax.serialization as fs
    tm = randomise_bn(TorchCNN())
    pt = save(tm, tmp_path)
    like = FlaxCNN().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    template = tmp_path / "like.msgpack"
    template.write_bytes(fs.to_bytes(like))
    r = _cli("match", pt, "--like", template, "--flatten", "6,4,4", "-o", tmp_path / "plan.json")
    assert r.returncode == 0, r.stderr
    assert "NCHW flatten" in r.stdout and "18/18 leaves paired" in r.stdout
    r = _cli("match", pt, "--like", template, "--mapping", tmp_path / "plan.json", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["leaves"]) == 18
    out = tmp_path / "out.msgpack"
    r = _cli("convert", pt, "--like", template, "--flatten", "6,4,4", "-o", out, "--quiet")
    assert r.returncode == 0, r.stderr
    want = jaxport.convert(pt, like, flatten=(6, 4, 4))
    from flax.traverse_util import flatten_dict
    got_flat = flatten_dict(fs.msgpack_restore(out.read_bytes()))
    want_flat = flatten_dict(jax.tree_util.tree_map(np.asarray, want))
    assert got_flat.keys() == want_flat.keys()
    assert all(np.array_equal(got_flat[k], want_flat[k]) for k in want_flat)
    x = np.random.RandomState(0).randn(2, 3, 8, 8).astype(np.float32)
    got = FlaxCNN().apply(fs.from_bytes(like, out.read_bytes()), jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert close(tm(torch.from_numpy(x)).detach().numpy(), got)


def test_cli_refuses_an_unpaired_template_and_writes_nothing(tmp_path):
    import flax.serialization as fs
    pt = save(TwoLinears(), tmp_path)
    template = tmp_path / "like.msgpack"
    template.write_bytes(fs.to_bytes(two_dense(["x", "y"])))
    r = _cli("match", pt, "--like", template)
    assert r.returncode == 1 and "AMBIGUOUS" in r.stdout and "pass a hint" in r.stderr
    r = _cli("convert", pt, "--like", template, "-o", tmp_path / "out.msgpack")
    assert r.returncode == 1 and not (tmp_path / "out.msgpack").exists()
    r = _cli("convert", pt, "--like", template, "--hint", "a=x", "--hint", "b=y", "-o", tmp_path / "out.msgpack")
    assert r.returncode == 0, r.stderr
    assert _cli("match", pt, "--like", template, "--flatten", "x").returncode == 2
    rules = tmp_path / "rules.txt"
    rules.write_text("# a and b are x and y\n^a\\. => x.\n^b\\. => y.\n")
    assert _cli("match", pt, "--like", template, "--rules", rules).returncode == 0
