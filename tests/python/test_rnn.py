"""Recurrent layers: torch's nn.LSTM, nn.GRU and nn.RNN keep each side's
gates fused in one weight and two biases; Flax (linen and NNX) cells keep a
Dense per gate, or a fused one, with the biases summed, and Equinox's cells
one bias (the GRU's two parts, summed and plain, and bias_n beside it);
Haiku's LSTM one linear over [x, h] with its gates in another order and a
forget bias it adds as it runs. Each case converts with no hints and runs
both models on the same sequence."""

import json

import numpy as np
import pytest
import torch

import jaxport
from jaxport import errors
from planref import apply_plan

I, H, T, B = 5, 7, 6, 3


def sequence():
    return np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)


def torch_rnn(kind, layers=1, bidirectional=False):
    torch.manual_seed({"LSTM": 1, "GRU": 2, "RNN": 3}[kind])
    m = getattr(torch.nn, kind)(I, H, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():  # biases far from zero, so that a lost or unsummed one shows
        for name, p in m.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-1, 1)
    return m


def torch_out(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x))[0].numpy()


def linen_stack(kind, layers):
    import flax.linen as nn
    cell = {"LSTM": nn.OptimizedLSTMCell, "GRU": nn.GRUCell, "RNN": nn.SimpleCell}[kind]

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(layers):
                x = nn.RNN(cell(H))(x)
            return x
    return Stack()


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_linen_cells_from_a_two_layer_checkpoint(kind, tmp_path):
    import jax
    m, x = torch_rnn(kind, layers=2), sequence()
    path = tmp_path / "rnn.pt"
    torch.save(m.state_dict(), path)
    flax_model = linen_stack(kind, 2)
    like = flax_model.init(jax.random.key(0), x)
    params, plan = jaxport.convert(path, like, return_plan=True)
    assert plan.ok and not plan.unused, (plan.problems, plan.unused)
    summed = [l for l in plan.leaves if "plus" in l["from"][0]]
    assert len(summed) == {"LSTM": 8, "GRU": 4, "RNN": 2}[kind]
    assert all(l["rule"] == "the two biases summed (b_ih + b_hh)" for l in summed)
    # the executor and the numpy reading of the plan agree bit for bit
    from jaxport import trees
    got = dict(zip(*trees.flatten(params)))
    assert all(np.array_equal(np.asarray(got[k]), v) for k, v in apply_plan(plan.data, plan.index).items())
    np.testing.assert_allclose(np.asarray(flax_model.apply(params, x)), torch_out(m, x), atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_linen_bidirectional_layers_by_name(kind):
    # Flax sorts backward_rnn before forward_rnn, where torch has _l0 then
    # _l0_reverse: the names decide, reverse being backward.
    import flax.linen as nn
    import jax
    m, x = torch_rnn(kind, layers=2, bidirectional=True), sequence()
    cell = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell}[kind]

    class Stack(nn.Module):
        def setup(self):
            self.layers = [nn.Bidirectional(nn.RNN(cell(H)), nn.RNN(cell(H))) for _ in range(2)]

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x
    flax_model = Stack()
    params, plan = jaxport.convert(m.state_dict(), flax_model.init(jax.random.key(0), x), return_plan=True)
    assert plan.ok and not plan.unused
    backward = [l["from"][0]["tensor"] for l in plan.leaves if "backward_rnn" in l["leaf"]]
    assert backward and all(t.endswith("_reverse") for t in backward)
    np.testing.assert_allclose(np.asarray(flax_model.apply(params, x)), torch_out(m, x), atol=1e-5)


def test_nnx_bidirectional_lstm():
    from flax import nnx
    m, x = torch_rnn("LSTM", layers=2, bidirectional=True), sequence()

    class Stack(nnx.Module):
        def __init__(self):
            self.layers = nnx.List([nnx.Bidirectional(nnx.RNN(nnx.LSTMCell(i, H, rngs=nnx.Rngs(0))),
                                                      nnx.RNN(nnx.LSTMCell(i, H, rngs=nnx.Rngs(1))))
                                    for i in (I, 2 * H)])

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            return x
    model = jaxport.convert(m, Stack())
    np.testing.assert_allclose(np.asarray(model(x)), torch_out(m, x), atol=1e-5)


@pytest.mark.parametrize("kind,cell", [("LSTM", "LSTMCell"), ("LSTM", "OptimizedLSTMCell"),
                                       ("RNN", "SimpleCell")])
def test_nnx_cells_from_a_live_module(kind, cell):
    from flax import nnx
    m, x = torch_rnn(kind), sequence()
    model = nnx.RNN(getattr(nnx, cell)(I, H, rngs=nnx.Rngs(0)))  # holds random-number streams
    out = jaxport.convert(m, model)
    assert out is model
    np.testing.assert_allclose(np.asarray(model(x)), torch_out(m, x), atol=1e-5)


def test_nnx_gru_cannot_hold_torchs_hidden_new_gate_bias():
    # nnx.GRUCell has no bias on the hidden side, where torch's b_hn sits
    # inside the reset gate's product: no plan can keep the outputs.
    from flax import nnx
    model = nnx.RNN(nnx.GRUCell(I, H, rngs=nnx.Rngs(0)))
    with pytest.raises(errors.MatchError):
        jaxport.convert(torch_rnn("GRU"), model)


def test_equinox_lstm_cell_from_torchs_cell():
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    torch.manual_seed(4)
    m, x = torch.nn.LSTMCell(I, H), sequence()

    class Model(eqx.Module):
        cell: eqx.nn.LSTMCell

        def __call__(self, xs):
            def step(state, xt):
                state = self.cell(xt, state)
                return state, state[0]
            return jax.lax.scan(step, (jnp.zeros(H), jnp.zeros(H)), xs)[1]

    model, plan = jaxport.convert(m, Model(eqx.nn.LSTMCell(I, H, key=jax.random.key(0))), return_plan=True)
    assert [l["rule"] for l in plan.leaves][-1] == "the two biases summed (b_ih + b_hh)"
    want = []
    for b in range(B):
        h = c = torch.zeros(H)
        for t in range(T):
            with torch.no_grad():
                h, c = m(torch.from_numpy(x[b, t]), (h, c))
            want.append(h.numpy())
    np.testing.assert_allclose(np.asarray(jax.vmap(model)(x)).reshape(B * T, H), np.stack(want), atol=1e-5)


def test_equinox_gru_cell_from_a_gru_layer(tmp_path):
    # Equinox's GRUCell bias is b_ir + b_hr, b_iz + b_hz, then b_in as it
    # is: one leaf of two parts; b_hn is its bias_n.
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    m, x = torch_rnn("GRU"), sequence()
    path = tmp_path / "gru.pt"
    torch.save(m.state_dict(), path)

    class Model(eqx.Module):
        cell: eqx.nn.GRUCell

        def __call__(self, xs):
            def step(h, xt):
                h = self.cell(xt, h)
                return h, h
            return jax.lax.scan(step, jnp.zeros(H), xs)[1]

    like = Model(eqx.nn.GRUCell(I, H, key=jax.random.key(0)))
    f = tmp_path / "plan.json"
    jaxport.match(path, like).save(f)
    model, plan = jaxport.convert(path, like, mapping=f, return_plan=True)
    assert plan.ok and not plan.unused
    bias = next(l for l in plan.leaves if l["leaf"].endswith("cell/bias"))
    assert [p["tensor"] for p in bias["from"]] == ["bias_ih_l0", "bias_ih_l0"]
    assert "plus" in bias["from"][0] and "plus" not in bias["from"][1]
    from jaxport import trees
    got = dict(zip(*trees.flatten(model)))
    assert all(np.array_equal(np.asarray(got[k]), v) for k, v in apply_plan(plan.data, plan.index).items())
    np.testing.assert_allclose(np.asarray(jax.vmap(model)(x)), torch_out(m, x), atol=1e-5)


def test_equinox_cells_from_a_bidirectional_lstm_without_biases():
    # a layer without biases offers eleven modules for its two tensors (more
    # than the matcher's first guess at a side's module count)
    import equinox as eqx
    import jax
    torch.manual_seed(5)
    m = torch.nn.LSTM(I, H, num_layers=2, bias=False, bidirectional=True, batch_first=True)
    keys = jax.random.split(jax.random.key(0), 4)
    cells = [eqx.nn.LSTMCell(I if k < 2 else 2 * H, H, use_bias=False, key=keys[k]) for k in range(4)]
    cells, plan = jaxport.convert(m, cells, return_plan=True)
    assert plan.ok and not plan.unused
    assert [l["from"][0]["tensor"] for l in plan.leaves][1::2] == [
        "weight_hh_l0", "weight_hh_l0_reverse", "weight_hh_l1", "weight_hh_l1_reverse"]
    x = sequence()
    want = torch_out(m, x)[0]  # the first sequence: the last layer's outputs, forward then backward
    h = x[0]
    for layer in range(2):
        outs = []
        for direction in range(2):
            cell, state, ys = cells[2 * layer + direction], (np.zeros(H, np.float32),) * 2, []
            for t in (range(T) if direction == 0 else reversed(range(T))):
                state = cell(h[t], state)
                ys.append(np.asarray(state[0]))
            outs.append(np.stack(ys if direction == 0 else ys[::-1]))
        h = np.concatenate(outs, axis=1)
    np.testing.assert_allclose(h, want, atol=1e-5)


def test_summed_biases_in_a_mapping_file(tmp_path):
    import jax
    m, x = torch_rnn("LSTM"), sequence()
    path = tmp_path / "lstm.pt"
    torch.save(m.state_dict(), path)
    like = linen_stack("LSTM", 1).init(jax.random.key(0), x)
    f = tmp_path / "plan.json"
    jaxport.match(path, like).save(f)
    again = jaxport.match(path, like, mapping=f)
    assert again.data["leaves"] == json.loads(f.read_text())["leaves"]
    assert "bias_ih_l0[0:7] + bias_hh_l0[0:7]" in str(again)
    data = json.loads(f.read_text())
    leaf = next(l for l in data["leaves"] if "plus" in l["from"][0])
    leaf["from"][0]["plus"]["slice"] = [0, 0, 6]
    f.write_text(json.dumps(data))
    with pytest.raises(errors.CorruptError, match="another number of elements"):
        jaxport.match(path, like, mapping=f)
    leaf["from"][0]["plus"] = {"tensor": "nope"}
    f.write_text(json.dumps(data))
    with pytest.raises(errors.NotFoundError):
        jaxport.match(path, like, mapping=f)


def haiku_core(kind, layers):
    """A Haiku DeepRNN of `layers` cores (VanillaRNN, with one bias for
    "RNN1", or LSTM) unrolled over a batch-major sequence, as hk.transform'ed
    functions."""
    import haiku as hk

    def forward(x):
        cls = {"LSTM": hk.LSTM, "RNN": hk.VanillaRNN, "GRU": hk.GRU,
               "RNN1": lambda h: hk.VanillaRNN(h, double_bias=False)}[kind]
        core = hk.DeepRNN([cls(H) for _ in range(layers)])
        return hk.dynamic_unroll(core, x, core.initial_state(x.shape[0]), time_major=False)[0]
    return hk.without_apply_rng(hk.transform(forward))


@pytest.mark.parametrize("kind", ["LSTM", "RNN", "RNN1"])
def test_haiku_cores_from_a_three_layer_checkpoint(kind, tmp_path):
    # Haiku's LSTM is one linear over [x, h] with gates i, g, f, o and 1
    # added to the forget gate as it runs; its VanillaRNN a ReLU cell with a
    # bias on each side, or with double_bias=False one bias, the two summed.
    import jax
    torch.manual_seed(5)
    m = getattr(torch.nn, {"RNN1": "RNN"}.get(kind, kind))(I, H, num_layers=3, batch_first=True,
                                                         **({"nonlinearity": "relu"} if kind != "LSTM" else {}))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-1, 1)
    x = sequence()
    path = tmp_path / "rnn.pt"
    torch.save(m.state_dict(), path)
    net = haiku_core(kind, 3)
    like = net.init(jax.random.key(0), x)
    params, plan = jaxport.convert(path, like, return_plan=True)
    assert plan.library == "haiku" and plan.ok and not plan.unused
    if kind == "LSTM":
        assert sorted(like) == ["lstm/linear", "lstm_1/linear", "lstm_2/linear"]
        bias = next(l for l in plan.leaves if l["leaf"] == "lstm_1/linear/b")
        assert [p["slice"][1] for p in bias["from"]] == [0, 2 * H, H, 3 * H]
        assert [p.get("add", 0) for p in bias["from"]] == [0, 0, -1, 0]
        assert "bias_ih_l1[7:14] + bias_hh_l1[7:14] - 1" in str(plan)
    if kind == "RNN1":
        assert sorted(like["vanilla_rnn_1/linear_1"]) == ["w"]
        assert "bias_ih_l1 + bias_hh_l1" in str(plan)
    from jaxport import trees
    got = dict(zip(*trees.flatten(params)))
    assert all(np.array_equal(np.asarray(got[k]), v) for k, v in apply_plan(plan.data, plan.index).items())
    np.testing.assert_allclose(np.asarray(net.apply(params, x)), torch_out(m, x), atol=1e-5)


def test_haiku_lstm_in_bfloat16_from_a_live_module():
    import jax
    m, x = torch_rnn("LSTM"), sequence()
    net = haiku_core("LSTM", 1)
    params = jaxport.convert(m, net.init(jax.random.key(0), x), dtype="bfloat16")
    b = np.asarray(params["lstm/linear"]["b"]).astype(np.float64)
    with torch.no_grad():
        s = (m.bias_ih_l0 + m.bias_hh_l0).double().numpy()
    want = np.concatenate([s[:H], s[2 * H:3 * H], s[H:2 * H] - 1, s[3 * H:]])
    np.testing.assert_allclose(b, want, rtol=2 ** -8)
    f32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32), params)
    np.testing.assert_allclose(np.asarray(net.apply(f32, x)), torch_out(m, x), atol=3e-2)


def test_haiku_gru_is_refused_and_says_why():
    import jax
    like = haiku_core("GRU", 1).init(jax.random.key(0), sequence())
    with pytest.raises(errors.MatchError, match=r"reset gate before its hidden matmul"):
        jaxport.convert(torch_rnn("GRU"), like, to="haiku")


def test_a_constant_in_a_mapping_file(tmp_path):
    import jax
    m, x = torch_rnn("LSTM"), sequence()
    path = tmp_path / "lstm.pt"
    torch.save(m.state_dict(), path)
    net = haiku_core("LSTM", 1)
    like = net.init(jax.random.key(0), x)
    f = tmp_path / "plan.json"
    jaxport.match(path, like).save(f)
    again = jaxport.match(path, like, mapping=f)
    assert again.data["leaves"] == json.loads(f.read_text())["leaves"]
    data = json.loads(f.read_text())
    leaf = next(l for l in data["leaves"] if l["leaf"] == "lstm/linear/b")
    leaf["from"][2]["add"] = -3.5  # the file's constant is the one added
    f.write_text(json.dumps(data))
    b = np.asarray(jaxport.convert(path, like, mapping=f)["lstm/linear"]["b"])
    with torch.no_grad():
        want = (m.bias_ih_l0[H:2 * H].double() + m.bias_hh_l0[H:2 * H].double() - 3.5).float().numpy()
    np.testing.assert_array_equal(b[2 * H:3 * H], want)
    leaf["from"][2]["add"] = "one"
    f.write_text(json.dumps(data))
    with pytest.raises(errors.CorruptError, match="finite number"):
        jaxport.match(path, like, mapping=f)


def test_haiku_lstm_from_the_command_line(tmp_path):
    # a leaf list without "library": Haiku's w and b names tell it
    import subprocess
    import jax
    from jaxport.match import target_leaves
    from test_torch_reader import cli
    m, x = torch_rnn("LSTM", layers=2), sequence()
    torch.save(m.state_dict(), tmp_path / "lstm.pt")
    _, specs = target_leaves(haiku_core("LSTM", 2).init(jax.random.key(0), x))
    (tmp_path / "leaves.json").write_text(json.dumps({"leaves": [
        {"path": p, "shape": list(s), "dtype": d} for p, s, d, _ in specs]}))
    r = subprocess.run([cli(), "match", tmp_path / "lstm.pt", "--like", tmp_path / "leaves.json", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["library"] == "haiku"
    assert {l["rule"] for l in plan["leaves"] if l["leaf"].endswith("/w")} == {
        "Haiku LSTM kernel: [weight_ih | weight_hh] transposed, gates i, g, f, o"}
