"""Every script in examples/ runs to the end and its outputs agree (each one
raises through jaxport.verify when PyTorch and JAX disagree)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    from jaxfixtures import cli_tool
    cli = Path(cli_tool()).parent
    env = dict(os.environ, PATH=f"{cli}{os.pathsep}{os.environ.get('PATH', '')}")
    args = [sys.executable, str(EXAMPLES / script)] + (["--out", str(tmp_path)] if script == "minilm.py" else [])
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "yes" in r.stdout or "ok" in r.stdout.lower()


def test_every_example_is_tested():
    assert {"flax_guide.py", "minilm.py", "resnet.py", "statedict2pytree_mlp.py", "transformer.py"} <= set(SCRIPTS)
