"""Hugging Face sharded checkpoints (pytorch_model.bin.index.json): one logical
index over torch shards, compared tensor by tensor with torch.load, and the
ways such an index can be wrong."""

import json

import pytest
import torch

import jaxport
from jaxport import errors
from test_torch_reader import check_same


def make_sharded(folder, legacy_second=False):
    """Two shards as transformers writes them, the second optionally in the
    pre-1.6 format, and the index that maps every tensor to its shard."""
    gen = torch.Generator().manual_seed(0)
    first = {"embed.weight": torch.randn(10, 4, generator=gen),
             "layers.0.weight": torch.randn(4, 4, generator=gen)}
    second = {"layers.1.weight": torch.randn(4, 4, generator=gen).t(),
              "head.bias": torch.arange(3, dtype=torch.int64)}
    names = {"pytorch_model-00001-of-00002.bin": first, "pytorch_model-00002-of-00002.bin": second}
    for i, (name, sd) in enumerate(names.items()):
        torch.save(sd, folder / name, _use_new_zipfile_serialization=not (legacy_second and i))
    index = {"metadata": {"total_size": 1234},
             "weight_map": {k: name for name, sd in names.items() for k in sd}}
    path = folder / "pytorch_model.bin.index.json"
    path.write_text(json.dumps(index))
    return path, {**first, **second}, index


@pytest.mark.parametrize("legacy_second", [False, True])
def test_one_index_over_all_shards(tmp_path, legacy_second):
    path, ref, _ = make_sharded(tmp_path, legacy_second)
    ix, _ = check_same(path, ref)
    assert ix.format == "sharded"
    assert set(jaxport.load(path)) == set(ref)


def rewrite(path, index):
    path.write_text(json.dumps(index))


def test_missing_tensor_is_named(tmp_path):
    path, _, index = make_sharded(tmp_path)
    index["weight_map"]["ghost.weight"] = "pytorch_model-00001-of-00002.bin"
    rewrite(path, index)
    with pytest.raises(errors.NotFoundError, match="ghost.weight"):
        jaxport.load(path)


def test_tensor_in_the_wrong_shard(tmp_path):
    path, _, index = make_sharded(tmp_path)
    index["weight_map"]["embed.weight"] = "pytorch_model-00002-of-00002.bin"
    rewrite(path, index)
    with pytest.raises(errors.CorruptError, match="embed.weight is in pytorch_model-00001"):
        jaxport.load(path)


@pytest.mark.parametrize("shard", ["../secret.bin", "/etc/passwd", "..", ""])
def test_shard_names_stay_beside_the_index(tmp_path, shard):
    path, _, index = make_sharded(tmp_path)
    index["weight_map"]["embed.weight"] = shard
    rewrite(path, index)
    with pytest.raises(errors.CorruptError, match="file name beside the index"):
        jaxport.load(path)


def test_missing_shard_file(tmp_path):
    path, _, _ = make_sharded(tmp_path)
    (tmp_path / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(errors.IoError, match="pytorch_model-00002-of-00002.bin"):
        jaxport.load(path)


def test_bad_json_and_bad_shape(tmp_path):
    path = tmp_path / "x.index.json"
    path.write_text('{"weight_map": {"a": "s.bin",')
    with pytest.raises(errors.CorruptError, match="not valid JSON"):
        jaxport.load(path)
    path.write_text('{"weight_map": ["a"]}')
    with pytest.raises(errors.FormatError, match="weight_map"):
        jaxport.load(path)
    path.write_text('{"weight_map": {"a": "s.bin", "a": "t.bin"}}')
    with pytest.raises(errors.CorruptError):
        jaxport.load(path)


def test_corrupt_shard_names_the_shard(tmp_path):
    path, _, _ = make_sharded(tmp_path)
    shard = tmp_path / "pytorch_model-00001-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(errors.JaxportError) as info:
        jaxport.load(path)
    assert "pytorch_model.bin.index.json: pytorch_model-00001-of-00002.bin:" in str(info.value)
