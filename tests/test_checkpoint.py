"""Checkpoints: atomic save, round trips through load_vqvae / load_prior, and a clear CheckpointError for bad files."""
import os

import pytest
import torch

from models.gpt import GPT
from models.vqvae import VQVAE
from pipeline import settings
from pipeline.checkpoint import load_checkpoint, load_pair, load_prior, load_vqvae, tokenizer_fingerprint
from pipeline.errors import CheckpointError
from pipeline.files import atomic_save


@pytest.fixture
def trained_vqvae(tiny_cfg):
    torch.manual_seed(0)
    model = VQVAE(tiny_cfg.vqvae)
    model.train()(torch.rand(8, 1, 28, 28) * 2 - 1)  # moves the codebooks off their random init
    return model.eval()


def vqvae_ckpt(model):
    return {"kind": "vqvae", "config": settings.to_dict(model.cfg), "model": model.state_dict(),
            "tokenizer_id": tokenizer_fingerprint(model)}


def gpt_ckpt(model, tokenizer_id):
    return {"kind": "gpt", "config": settings.to_dict(model.cfg), "model": model.state_dict(),
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


def test_load_pair_compiled_for_sampling_computes_what_the_eager_models_do(saved_pair):
    """sample.compile: the blocks and the decoder compiled in place (weights keep their names); a KV-cache sampling
    step (the dynamic cache position) and decoding agree with the eager models."""
    vq_model, prior, vq_path, gpt_path = saved_pair
    compiled, vqvae, _ = load_pair(gpt_path, vq_path, compile=True)
    assert compiled.state_dict().keys() == prior.state_dict().keys()
    assert all(m._compiled_call_impl is not None for m in [*compiled.blocks, vqvae.decoder])  # Module.compile's
    tokens, classes = torch.randint(0, prior.V, (2, prior.L)), torch.tensor([3, 10])
    with torch.no_grad():
        steps = []
        for model in (prior, compiled):
            caches = model.new_cache()
            steps.append([model.step_logits(classes, tokens[:, :0], caches, 0)] +
                         [model.step_logits(classes, tokens[:, s - 1:s], caches, s) for s in range(1, 4)])
        idx = vq_model.from_sequence(tokens)
        assert torch.allclose(vqvae.decode(idx), vq_model.decode(idx), atol=1e-5)
    for eager, fast in zip(*steps):
        assert torch.allclose(fast, eager, atol=1e-5)


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


def test_empty_file_and_folder_raise_one_line_checkpoint_errors(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="unreadable") as info:
        load_vqvae(str(empty))
    assert str(empty) in str(info.value) and len(str(info.value).splitlines()) == 1
    with pytest.raises(CheckpointError, match="is a folder"):
        load_vqvae(str(tmp_path))


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


# --- VAR and diffusion priors ------------------------------------------------------------------------------------

def prior_ckpt(model, vqvae):
    """A prior checkpoint as transformer_train.py writes it (kind, config, weights, the tokenizer's token info)."""
    return {"kind": model.kind, "config": settings.to_dict(model.cfg), "model": model.state_dict(), "epoch": 1,
            **vqvae.token_info(), "tokenizer_id": tokenizer_fingerprint(vqvae)}


@pytest.fixture
def saved_var(tmp_path):
    from models.var import VAR
    cfg = settings.build_config("tiny_var", ["vqvae.phi_ratio=0.3"])  # not the default: it must come from the file
    torch.manual_seed(0)
    vqvae = VQVAE(cfg.vqvae)
    vqvae.train()(torch.rand(8, 1, 28, 28) * 2 - 1)
    vqvae.eval()
    torch.manual_seed(1)
    prior = VAR.from_tokenizer(cfg.var, vqvae.token_info(), vqvae).eval()
    with torch.no_grad():  # adaLN-Zero starts as the identity; give the blocks something to carry over
        for name, p in prior.named_parameters():
            if ".ada." in name or name.startswith("ada_f"):
                p.normal_(std=0.1)
    atomic_save(vqvae_ckpt(vqvae), str(tmp_path / "vqvae_multiscale.pt"))
    atomic_save(prior_ckpt(prior, vqvae), str(tmp_path / "var.pt"))
    return vqvae, prior, str(tmp_path / "var.pt")


@pytest.fixture(params=["mask", "uniform"])
def saved_diffusion(request, tmp_path, trained_vqvae):
    from models.diffusion import DiscreteDiffusion
    dcfg = settings.build_config("tiny", [f"diffusion.noise={request.param}"]).diffusion
    torch.manual_seed(1)
    prior = DiscreteDiffusion(dcfg, trained_vqvae.grid_shape, trained_vqvae.cfg.codebook_size).eval()
    atomic_save(vqvae_ckpt(trained_vqvae), str(tmp_path / "vqvae.pt"))
    path = str(tmp_path / f"{'diffusion' if request.param == 'mask' else 'diffusion_uniform'}.pt")
    atomic_save(prior_ckpt(prior, trained_vqvae), path)
    return trained_vqvae, prior, path


def test_load_prior_rebuilds_a_var_with_identical_outputs(saved_var):
    from models.var import VAR
    vqvae, prior, path = saved_var
    loaded, ckpt = load_prior(path)
    assert isinstance(loaded, VAR) and ckpt["kind"] == "var" and not loaded.training
    assert loaded.scales == prior.scales == (1, 2, 3, 4) and loaded.V == prior.V and loaded.cfg == prior.cfg
    reference = vqvae.quantizer.state_dict()
    assert all(torch.equal(loaded.tokenizer.state_dict()[k], reference[k]) for k in reference)
    assert not any(p.requires_grad for p in loaded.tokenizer.parameters())
    tokens, classes = vqvae.encode_sequence(torch.rand(3, 1, 28, 28) * 2 - 1), torch.tensor([3, 10, 7])
    assert torch.equal(loaded(tokens, classes), prior(tokens, classes))
    a = loaded.sample(classes, guidance=1.5, generator=torch.Generator().manual_seed(0))
    b = prior.sample(classes, guidance=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_load_prior_rebuilds_a_diffusion_prior_with_identical_outputs(saved_diffusion):
    from models.diffusion import DiscreteDiffusion
    _, prior, path = saved_diffusion
    loaded, ckpt = load_prior(path)
    assert isinstance(loaded, DiscreteDiffusion) and ckpt["kind"] == "diffusion" and not loaded.training
    assert loaded.cfg == prior.cfg and loaded.grid_shape == prior.grid_shape and loaded.V == prior.V
    tokens, classes = torch.randint(0, prior.V, (2, prior.L)), torch.tensor([3, 10])
    tokens[0, :5] = prior.mask_id
    t = torch.tensor([0.3, 0.9])
    assert torch.equal(loaded(tokens, classes, t), prior(tokens, classes, t))
    a = loaded.sample(classes, guidance=1.5, generator=torch.Generator().manual_seed(0))
    b = prior.sample(classes, guidance=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_load_pair_finds_the_multiscale_tokenizer_beside_a_var(saved_var):
    vqvae, _, path = saved_var
    prior, loaded_vqvae, ckpt = load_pair(path, None)
    assert prior.kind == "var" and loaded_vqvae.multiscale and ckpt["scales"] == [1, 2, 3, 4]
    assert tokenizer_fingerprint(loaded_vqvae) == tokenizer_fingerprint(vqvae)


def test_load_pair_for_a_var_without_its_tokenizer_names_the_missing_file(saved_var, tmp_path, trained_vqvae):
    _, _, path = saved_var
    os.remove(tmp_path / "vqvae_multiscale.pt")
    atomic_save(vqvae_ckpt(trained_vqvae), str(tmp_path / "vqvae.pt"))  # a single-scale one is not picked up
    with pytest.raises(CheckpointError, match="vqvae_multiscale.pt"):
        load_pair(path, None)


def test_load_pair_finds_the_single_scale_tokenizer_beside_a_diffusion_prior(saved_diffusion):
    vqvae, prior, path = saved_diffusion
    loaded, loaded_vqvae, ckpt = load_pair(path, None)
    assert loaded.kind == "diffusion" and loaded.cfg.noise == prior.cfg.noise and not loaded_vqvae.multiscale
    assert tokenizer_fingerprint(loaded_vqvae) == tokenizer_fingerprint(vqvae)


def test_prior_and_tokenizer_paths(tmp_path):
    from pipeline.checkpoint import prior_path, tokenizer_path
    from models.prior import prior_class
    cfg = settings.build_config("tiny", [f"checkpoint_dir={tmp_path}", "run="])
    assert prior_path(cfg, "var") == os.path.join(str(tmp_path), "var.pt")
    assert prior_path(cfg, "gpt") == os.path.join(str(tmp_path), "gpt.pt")
    diffusion = prior_class("diffusion")
    assert diffusion.checkpoint_name(cfg.diffusion) == "diffusion" and prior_path(cfg, "diffusion").endswith("diffusion.pt")
    uniform = settings.build_config("tiny", [f"checkpoint_dir={tmp_path}", "run=", "diffusion.noise=uniform"])
    assert diffusion.checkpoint_name(uniform.diffusion) == "diffusion_uniform"
    assert prior_path(uniform, "diffusion") == os.path.join(str(tmp_path), "diffusion_uniform.pt")
    assert prior_class("var").checkpoint_name(uniform.var) == "var"
    assert prior_class("gpt").checkpoint_name(uniform.gpt) == "gpt"
    assert prior_path(cfg, "/some/where/my_prior.pt") == "/some/where/my_prior.pt"  # a path is taken as it is
    assert tokenizer_path(cfg) == os.path.join(str(tmp_path), "vqvae.pt")
    assert tokenizer_path(cfg, multiscale=True) == os.path.join(str(tmp_path), "vqvae_multiscale.pt")
    multi = settings.build_config("tiny_var", [f"checkpoint_dir={tmp_path}", "run="])
    assert tokenizer_path(multi) == os.path.join(str(tmp_path), "vqvae_multiscale.pt")
    assert tokenizer_path(multi, multiscale=False) == os.path.join(str(tmp_path), "vqvae.pt")


def test_unknown_prior_kind_is_refused(saved_var, tmp_path):
    from pipeline.checkpoint import build_prior
    with pytest.raises(CheckpointError, match="unknown prior kind 'pixelcnn'"):
        build_prior("pixelcnn", {}, {})
    ckpt = torch.load(saved_var[2], weights_only=True)
    ckpt["kind"] = "pixelcnn"
    path = str(tmp_path / "odd.pt")
    atomic_save(ckpt, path)
    with pytest.raises(CheckpointError, match="pixelcnn"):
        load_prior(path)
