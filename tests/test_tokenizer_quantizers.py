"""The tokenizer's quantizer as a choice (vqvae.quantizer = vq | rvq | fsq): the config that follows it, the one
interface every quantizer gives VQVAE, and the scripts end to end on the tiny preset with each new quantizer."""
import numpy as np
import pytest
import torch

from config import Config, VQVAEConfig
from models.vqvae import QUANTIZERS, VQVAE
from pipeline import settings, training
from pipeline.errors import ConfigError
from pipeline.settings import build_config
from script_runs import dirs_of, run_together

NEW_QUANTIZERS = {"rvq": ["vqvae.quantizer=rvq", "vqvae.num_codebooks=2"],
                  "fsq": ["vqvae.quantizer=fsq", "vqvae.fsq_levels=(4,4,3)"]}


def test_fsq_sets_the_vocabulary_and_code_size_from_its_levels():
    cfg = build_config("tiny", ["vqvae.quantizer=fsq", "vqvae.fsq_levels=(8,5,5,5)"])
    assert (cfg.vqvae.codebook_size, cfg.vqvae.code_dim) == (1000, 4)


@pytest.mark.parametrize("overrides, message", [
    (["vqvae.quantizer=fsq", "vqvae.codebook_size=512"], "follows vqvae.fsq_levels"),
    (["vqvae.quantizer=lfq"], "vqvae.quantizer must be one of vq, rvq, fsq"),
    (["vqvae.quantizer=rvq", "vqvae.scales=(1,2,3,4)"], "set vqvae.quantizer=vq"),
    (["vqvae.quantizer=fsq", "vqvae.fsq_levels=(8,2)"], "levels of at least 3"),
])
def test_a_bad_quantizer_choice_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config("tiny", overrides)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_every_quantizer_gives_the_token_grid_and_decodes_it_as_in_training(name):
    torch.manual_seed(0)
    overrides = NEW_QUANTIZERS.get(name, ["vqvae.num_codebooks=2"])
    cfg = build_config("tiny", overrides).vqvae
    model = VQVAE(cfg)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    model.train()
    loss, parts = model.loss(x)
    loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # the encoder learns through the quantizer
    model.eval()
    idx_BHWK = model.encode(x)
    assert idx_BHWK.shape == (6, cfg.grid_size, cfg.grid_size, cfg.num_codebooks)
    assert 0 <= idx_BHWK.min() and idx_BHWK.max() < cfg.codebook_size
    assert parts["perplexity_K"].shape == (cfg.num_codebooks,)
    with torch.no_grad():
        recon_BCHW = model(x)[0]
    assert torch.allclose(model.decode(idx_BHWK), recon_BCHW, atol=1e-5)
    assert torch.equal(model.decode_sequence(model.encode_sequence(x)), model.decode(idx_BHWK))


def test_a_run_config_saved_before_a_field_existed_compares_as_its_default():
    current = training.run_config(build_config("tiny"), "data", "vqvae", "vqvae_train")
    older = {**current, "vqvae": {k: v for k, v in current["vqvae"].items() if k not in ("quantizer", "fsq_levels")}}
    assert training.with_new_fields(older) == current
    assert training.with_new_fields(older)["vqvae"]["quantizer"] == Config().vqvae.quantizer


def test_a_multiscale_checkpoint_from_before_scale_weighting_was_trained_counting_each_vector_once():
    """The field came with the old behaviour as its default, and the default changed later: a checkpoint without it
    resumes, and rebuilds, as it was trained, not as today's default."""
    current = training.run_config(build_config("tiny_var"), "data", "vqvae", "vqvae_train")
    older = {**current, "vqvae": {k: v for k, v in current["vqvae"].items() if k != "scale_weighting"}}
    assert current["vqvae"]["scale_weighting"] == "scales"
    assert training.with_new_fields(older)["vqvae"]["scale_weighting"] == "vectors"
    assert settings.from_dict(VQVAEConfig, older["vqvae"]).scale_weighting == "vectors"
    assert settings.from_dict(VQVAEConfig, current["vqvae"]).scale_weighting == "scales"


def test_each_new_quantizer_trains_a_tokenizer_and_a_gpt_and_samples(tmp_path):
    roots = {name: tmp_path / name for name in NEW_QUANTIZERS}
    flags = {name: [*dirs_of(root), *[f for o in NEW_QUANTIZERS[name] for f in ("--set", o)]]
             for name, root in roots.items()}
    run_together(*[("vqvae_train.py", *f) for f in flags.values()])
    run_together(*[("transformer_train.py", *f) for f in flags.values()])
    results = run_together(*[("generator.py", *f, "--n", "20", "--save", str(roots[name] / "s.npz"))
                             for name, f in flags.items()])
    for name, result in zip(flags, results):
        images = np.load(roots[name] / "s.npz")["images"]
        assert images.shape[0] == 20 and images.std() > 0, name
        ckpt = torch.load(roots[name] / "ck" / "vqvae.pt", weights_only=True)
        assert ckpt["config"]["quantizer"] == name
