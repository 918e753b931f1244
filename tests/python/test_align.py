"""jaxport align: the page's requests end to end over HTTP, as its script
makes them, against the real server; the plan it saves converts a model
whose outputs match PyTorch's."""

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn

import jaxport
from jaxport.match import target_leaves
from test_torch_reader import cli


class Flax(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(4, name="first")(x))
        x = nn.relu(nn.Dense(4, name="second")(x))
        return nn.Dense(2, name="out")(x)


def torch_model():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"enc": torch.nn.Linear(4, 4), "dec": torch.nn.Linear(4, 4),
                                "head": torch.nn.Linear(4, 2)})


def torch_forward(m, x):
    with torch.no_grad():
        h = torch.relu(m["dec"](torch.relu(m["enc"](torch.from_numpy(x)))))
        return m["head"](h).numpy()


@pytest.fixture
def files(tmp_path):
    """A checkpoint whose two 4x4 Linears have names that say nothing of
    the target's (enc, dec against first, second): match leaves them
    ambiguous. Returns (checkpoint, leaf list, like, model)."""
    m = torch_model()
    ckpt = tmp_path / "m.pt"
    torch.save(m.state_dict(), ckpt)
    like = Flax().init(jax.random.key(0), jnp.zeros((1, 4)))
    lib, specs = target_leaves(like)
    leaves = tmp_path / "leaves.json"
    leaves.write_text(json.dumps({"library": lib, "leaves": [
        {"path": p, "shape": list(s), "dtype": d} for p, s, d, _ in specs]}))
    return ckpt, leaves, like, m


class Server:
    def __init__(self, ckpt, leaves, out, *extra):
        self.proc = subprocess.Popen([cli(), "align", str(ckpt), "--like", str(leaves), "-o", str(out),
                                      "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        port = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert port, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.first_line = line
        self.base = f"http://127.0.0.1:{port.group(1)}"
        page = self.get("/")[1]
        self.token = re.search(r'const TOKEN = "([0-9a-f]{32})"', page).group(1)

    def request(self, path, body=None, token=True, headers=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base + path, data=data, method="GET" if body is None else "POST")
        if token and body is not None:
            req.add_header("X-Jaxport-Token", self.token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get(self, path):
        return self.request(path)

    def post(self, path, body, **kw):
        status, text = self.request(path, body, **kw)
        return status, json.loads(text) if text.startswith("{") else text

    def wait(self):
        return self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_person_pairs_the_ambiguous_modules_and_the_plan_converts(files, tmp_path):
    ckpt, leaves, like, m = files
    out = tmp_path / "plan.json"
    s = Server(ckpt, leaves, out)
    try:
        assert "4 of 6 leaves to decide" in s.first_line
        status, state = s.post("/save", {})  # a plan with leaves open may be saved
        assert status == 200 and state["saved"] and not state["ok"]
        status, text = s.get("/state")
        state = json.loads(text)
        assert status == 200 and not state["ok"] and "look-alike" in state["check"]
        assert set(state["candidates"]) == {"first", "second"}
        first = state["candidates"]["first"]
        assert sorted(first["leaves"]) == ["params/first/bias", "params/first/kernel"]
        # unpaired modules first, in the checkpoint's order; then the others
        assert first["sources"] == ["enc", "dec", "head"]
        ambiguous = [l for l in state["plan"]["leaves"] if "ambiguous" in l]
        assert len(ambiguous) == 4
        # the page's "Pair" buttons, one module at a time
        status, state = s.post("/hints", {"hints": ["enc=first"]})
        assert status == 200 and state["hints"] == ["enc=first"] and not state["saved"]
        status, state = s.post("/hints", {"hints": ["enc=first", "dec=second"]})
        assert status == 200 and state["ok"] and state["candidates"] == {}
        status, state = s.post("/save", {})
        assert status == 200 and state["saved"]
        assert s.post("/quit", {}) == (200, {"saved": True})
        assert s.wait() == 0
    finally:
        s.stop()
    plan = json.loads(out.read_text())
    taken = {l["leaf"]: l["from"][0]["tensor"] for l in plan["leaves"]}
    assert taken["params/first/kernel"] == "enc.weight" and taken["params/second/bias"] == "dec.bias"
    params = jaxport.convert(ckpt, like, mapping=out)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(Flax().apply(params, x)), torch_forward(m, x), rtol=1e-5, atol=1e-6)


def test_requests_it_refuses(files, tmp_path):
    ckpt, leaves, _, _ = files
    out = tmp_path / "plan.json"
    s = Server(ckpt, leaves, out, "--hint", "head=out")
    try:
        assert s.post("/hints", {"hints": ["enc=first"]}, token=False)[0] == 403
        assert s.post("/hints", {"hints": []}, headers={"X-Jaxport-Token": "0" * 32}, token=False)[0] == 403
        # another site's page that resolved its own name to 127.0.0.1
        status, text = s.post("/save", {}, headers={"Host": "evil.example"})
        assert status == 403 and "127.0.0.1" in text
        assert s.get("/hints")[0] == 405
        assert s.post("/state", {})[0] == 405
        assert s.get("/../etc/passwd")[0] in (400, 404)
        assert s.get("/nothing")[0] == 404
        for bad in (b"{not json", b"[]", json.dumps({"hints": "enc=first"}).encode(),
                    json.dumps({"hints": ["no equals sign"]}).encode(), json.dumps({"hints": ["=first"]}).encode(),
                    json.dumps({"hints": [1]}).encode()):
            status, body = s.post("/hints", bad)
            assert status == 400 and body["error"], bad
        status, body = s.post("/hints", b"{" + b" " * (2 << 20) + b"}")
        assert status == 413
        status, text = s.get("/state")
        state = json.loads(text)  # nothing refused changed the session
        assert state["hints"] == [] and state["fixed_hints"] == ["head=out"] and not state["saved"]
        assert s.post("/quit", {})[1] == {"saved": False}
        assert s.wait() == 1
        assert "stopped without saving" in s.proc.stderr.read()
    finally:
        s.stop()
    assert not out.exists()


def test_ctrl_c_stops_it_without_a_file(files, tmp_path):
    ckpt, leaves, _, _ = files
    s = Server(ckpt, leaves, tmp_path / "plan.json")
    try:
        s.proc.send_signal(signal.SIGINT)
        assert s.wait() == 1
    finally:
        s.stop()
    assert not (tmp_path / "plan.json").exists()


def test_usage():
    r = subprocess.run([cli(), "align", "x.pt", "--like", "l.json"], capture_output=True, text=True)
    assert r.returncode == 2 and "-o PLAN" in r.stderr
    r = subprocess.run([cli(), "align", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "127.0.0.1" in r.stdout


def test_from_python_with_a_live_module(tmp_path):
    # jaxport.align serves the page for a live module (saved to a temporary
    # file) and, once the page saves and quits, returns the plan, which
    # converts the module itself.
    m = torch_model()
    like = Flax().init(jax.random.key(0), jnp.zeros((1, 4)))
    out = tmp_path / "plan.json"
    server = jaxport.align(m, like, out, port=0, hints=["head=out"], wait=False)
    base = server.url.rstrip("/")
    token = re.search(r'const TOKEN = "([0-9a-f]{32})"', urllib.request.urlopen(base + "/").read().decode()).group(1)

    def post(path, body):
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"X-Jaxport-Token": token})
        return json.loads(urllib.request.urlopen(req, timeout=30).read())
    state = post("/hints", {"hints": ["dec=second", "enc=first"]})
    assert state["ok"] and state["fixed_hints"] == ["head=out"]
    post("/save", {})
    post("/quit", {})
    plan = server.wait(timeout=60)
    assert plan.ok and not plan.unused
    params = jaxport.convert(m, like, mapping=out)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(Flax().apply(params, x)), torch_forward(m, x), rtol=1e-5, atol=1e-6)
    # stopped without saving: None, and the file saved before is not taken for a new one
    again = jaxport.align(m, like, out, port=0, wait=False)
    assert again.stop() is None and again.proc.returncode == 1


def test_a_template_for_another_model_lists_the_first_modules(tmp_path):
    # every leaf is open: the page lists ALIGN_MODULES (100) target modules
    # and counts the open leaves of the others
    m = torch.nn.ModuleDict({f"block{i}": torch.nn.Linear(3, 5) for i in range(150)})
    ckpt = tmp_path / "m.pt"
    torch.save(m.state_dict(), ckpt)
    leaves = tmp_path / "leaves.json"
    leaves.write_text(json.dumps({"library": "flax", "leaves": [
        {"path": f"params/Dense_{i}/{n}", "shape": s, "dtype": "float32"}
        for i in range(150) for n, s in (("kernel", [4, 6]), ("bias", [6]))]}))
    s = Server(ckpt, leaves, tmp_path / "plan.json")
    try:
        state = json.loads(s.get("/state")[1])
        assert len(state["candidates"]) == 100 and state["unlisted"] == 100
        assert all(len(c["sources"]) == 12 and len(c["leaves"]) == 2 for c in state["candidates"].values())
    finally:
        s.stop()
