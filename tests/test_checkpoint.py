"""Checkpoints: atomic save, round trips through load_vqvae / load_prior, and a clear CheckpointError for bad files."""
import os

import pytest
import torch

import config
from checkpoint import (CheckpointError, atomic_save, load_checkpoint, load_pair, load_prior, load_vqvae,
                        tokenizer_fingerprint)
from models.gpt import GPT
from models.vqvae import VQVAE


@pytest.fixture
def trained_vqvae(tiny_cfg):
    torch.manual_seed(0)
    model = VQVAE(tiny_cfg.vqvae)
    model.train()(torch.rand(8, 1, 28, 28) * 2 - 1)  # moves the codebooks off their random init
    return model.eval()


def vqvae_ckpt(model):
    return {"kind": "vqvae", "config": config.to_dict(model.cfg), "model": model.state_dict(),
            "tokenizer_id": tokenizer_fingerprint(model)}


def gpt_ckpt(model, tokenizer_id):
    return {"kind": "gpt", "config": config.to_dict(model.cfg), "model": model.state_dict(),
            "grid_shape": list(model.grid_shape), "codebook_size": model.V, "tokenizer_id": tokenizer_id}


@pytest.fixture
def saved_pair(tmp_path, tiny_cfg, trained_vqvae):
    torch.manual_seed(1)
    prior = GPT(tiny_cfg.gpt, trained_vqvae.grid_shape, tiny_cfg.vqvae.codebook_size).eval()
    vq_path, gpt_path = str(tmp_path / "vqvae.pt"), str(tmp_path / "gpt.pt")
    atomic_save(vqvae_ckpt(trained_vqvae), vq_path)
    atomic_save(gpt_ckpt(prior, tokenizer_fingerprint(trained_vqvae)), gpt_path)
    return trained_vqvae, prior, vq_path, gpt_path


def test_vqvae_round_trip_gives_identical_outputs(saved_pair):
    model, _, vq_path, _ = saved_pair
    loaded, ckpt = load_vqvae(vq_path)
    assert not loaded.training
    assert loaded.cfg == model.cfg
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    idx = model.encode(x)
    assert torch.equal(loaded.encode(x), idx)
    assert torch.equal(loaded.decode(idx), model.decode(idx))
    assert tokenizer_fingerprint(loaded) == ckpt["tokenizer_id"]


def test_prior_round_trip_gives_identical_outputs(saved_pair):
    _, prior, _, gpt_path = saved_pair
    loaded, _ = load_prior(gpt_path)
    assert not loaded.training and loaded.grid_shape == prior.grid_shape and loaded.V == prior.V
    tokens, classes = torch.randint(0, prior.V, (2, prior.L)), torch.tensor([3, 10])
    assert torch.equal(loaded(tokens, classes), prior(tokens, classes))


def test_load_pair_accepts_the_matching_tokenizer(saved_pair):
    _, _, vq_path, gpt_path = saved_pair
    prior, vqvae, ckpt = load_pair(gpt_path, vq_path)
    assert isinstance(prior, GPT) and isinstance(vqvae, VQVAE) and ckpt["kind"] == "gpt"


def test_load_pair_refuses_another_tokenizer(saved_pair, tmp_path):
    model, _, vq_path, gpt_path = saved_pair
    with torch.no_grad():
        model.quantizer.codebook_KVD.add_(0.01)  # other weights -> other fingerprint
    other_path = str(tmp_path / "other_vqvae.pt")
    atomic_save(vqvae_ckpt(model), other_path)
    with pytest.raises(CheckpointError, match="tokenizer") as info:
        load_pair(gpt_path, other_path)
    assert gpt_path in str(info.value) and other_path in str(info.value)


def test_fingerprint_tracks_weights(tiny_cfg):
    torch.manual_seed(0)
    a = VQVAE(tiny_cfg.vqvae)
    b = VQVAE(tiny_cfg.vqvae)
    b.load_state_dict(a.state_dict())
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    with torch.no_grad():
        b.decoder.head[1].bias.add_(1e-3)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope" / "vqvae.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        load_vqvae(path)
    assert path in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_prior(path)
    assert path in str(info.value)


def test_gpt_checkpoint_loaded_as_vqvae_is_refused(saved_pair):
    _, _, _, gpt_path = saved_pair
    with pytest.raises(CheckpointError, match="holds a gpt model"):
        load_vqvae(gpt_path)


def test_vqvae_checkpoint_loaded_as_prior_is_refused(saved_pair):
    _, _, vq_path, _ = saved_pair
    with pytest.raises(CheckpointError, match="holds a vqvae model"):
        load_prior(vq_path)


def test_garbage_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a torch file \x00\x01\x02" * 10)
    with pytest.raises(CheckpointError, match="unreadable") as info:
        load_vqvae(str(path))
    assert str(path) in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_truncated_checkpoint_raises_checkpoint_error(saved_pair, tmp_path):
    _, _, vq_path, _ = saved_pair
    cut = tmp_path / "cut.pt"
    cut.write_bytes(open(vq_path, "rb").read()[:500])
    with pytest.raises(CheckpointError):
        load_vqvae(str(cut))


def test_file_without_kind_is_refused(tmp_path):
    for i, obj in enumerate([{"model": {}}, [1, 2, 3]]):
        path = str(tmp_path / f"other{i}.pt")
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="not a checkpoint of this repo"):
            load_checkpoint(path, "vqvae")


def test_atomic_save_leaves_no_temp_files_and_overwrites(tmp_path):
    path = str(tmp_path / "sub" / "ckpt.pt")
    atomic_save({"a": torch.arange(3)}, path)
    atomic_save({"a": torch.arange(5)}, path)
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))


def test_failed_atomic_save_keeps_the_old_file_and_no_temp(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    atomic_save({"a": 1}, path)
    with pytest.raises(Exception):
        atomic_save({"a": lambda: None}, path)  # a lambda cannot be pickled
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert torch.load(path, weights_only=True) == {"a": 1}
