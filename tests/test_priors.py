"""The prior interface (models/prior.py): one contract every registered prior keeps, and a toy fourth prior that goes
through training, sampling, saving and loading without any script knowing its name."""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import config
from pipeline import checks, sampling, settings
import generator
import transformer_train
from models import prior as prior_module
from models.prior import Prior, filtered_probs, prior_class, registered
from models.vqvae import VQVAE
from pipeline.checkpoint import build_prior, load_pair, load_prior, tokenizer_fingerprint
from pipeline.files import atomic_save

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PositionUnigram(Prior):
    """The toy fourth prior: one learned distribution over codes per sequence position; it ignores the class and
    every other token, so untrained it draws uniform tokens."""
    kind = "toy"
    config_class = config.PriorConfig

    def __init__(self, cfg, grid_shape, codebook_size):
        super().__init__()
        self.cfg, self.V, self.L = cfg, codebook_size, math.prod(grid_shape)
        self.logits_LV = nn.Parameter(torch.zeros(self.L, self.V))

    def loss(self, tokens_BL, class_B):
        return self.cross_entropy(self.logits_LV.expand(len(tokens_BL), -1, -1), tokens_BL)

    def forward_passes(self, steps=None):
        return 1

    def _sample(self, class_B, temperature, top_k, guidance, generator):
        probs_LV = filtered_probs(self.logits_LV.float(), temperature, top_k)
        draws = torch.multinomial(probs_LV.repeat(len(class_B), 1), 1, generator=generator)
        return draws.view(len(class_B), self.L)


@pytest.fixture
def toy_registered():
    prior_module.register(PositionUnigram)
    yield PositionUnigram
    prior_module._REGISTRY.pop("toy")


@dataclasses.dataclass
class ToyConfig(config.Config):
    """config.Config plus the two sections a new prior adds."""
    toy: config.PriorConfig = dataclasses.field(default_factory=config.PriorConfig)
    toy_train: config.GPTTrainConfig = dataclasses.field(
        default_factory=lambda: config.GPTTrainConfig(epochs=2, batch_size=64, lr=0.1, warmup_steps=0))


# --- one tiny tokenizer of each layout, untrained (the contract does not need good tokens) ------------------------

def tokenizer(preset):
    torch.manual_seed(0)
    vqvae = VQVAE(settings.build_config(preset).vqvae)
    vqvae.train()(torch.rand(16, 1, 28, 28) * 2 - 1)  # initialise the codebooks from data
    return vqvae.eval()


@pytest.fixture(scope="module")
def tokenizers():
    return {False: tokenizer("tiny"), True: tokenizer("tiny_var")}


# every registered prior, the uniform diffusion process beside the mask one, and the toy
VARIANTS = [(kind, []) for kind in config.PRIORS] + [("diffusion", ["diffusion.noise=uniform"]), ("toy", [])]


def make_prior(kind, overrides, tokenizers):
    cfg = settings.build_config("tiny", overrides)
    section = getattr(cfg, kind) if hasattr(cfg, kind) else config.PriorConfig()
    vqvae = tokenizers[prior_class(kind).multiscale_tokenizer]
    torch.manual_seed(1)
    return build_prior(kind, settings.to_dict(section), vqvae.token_info(), vqvae).eval(), vqvae


@pytest.fixture(params=VARIANTS, ids=lambda v: "_".join([v[0], *[o.split("=")[1] for o in v[1]]]))
def prior_and_tokenizer(request, tokenizers, toy_registered):
    return make_prior(*request.param, tokenizers)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def real_tokens(prior, vqvae, n=6):
    g = seeded(3)
    return vqvae.encode_sequence(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1), torch.arange(n) % 10


def test_every_config_section_has_a_registered_prior_and_the_toy_is_only_registered_while_asked_for():
    assert set(config.PRIORS) == {"gpt", "var", "diffusion"} and set(config.PRIORS) <= set(registered())
    assert "toy" not in registered()


def test_a_training_step_changes_the_weights_and_the_loss_is_a_finite_scalar(prior_and_tokenizer):
    prior, vqvae = prior_and_tokenizer
    tokens, classes = real_tokens(prior, vqvae)
    prior.train()
    optimizer = transformer_train.make_optimizer(prior, config.GPTTrainConfig())
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    loss = prior.loss(tokens, prior.drop_classes(classes, seeded(0)))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in prior.state_dict().items())


def test_samples_are_codes_of_the_tokenizers_sequence_length(prior_and_tokenizer):
    prior, vqvae = prior_and_tokenizer
    tokens = prior.sample(torch.arange(5), generator=seeded(0))
    assert tokens.shape == (5, vqvae.sequence_length) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < vqvae.cfg.codebook_size
    assert vqvae.decode_sequence(tokens).shape == (5, 1, 28, 28)
    assert isinstance(prior.forward_passes(), int) and prior.forward_passes() >= 1


def test_sampling_with_and_without_the_kv_cache_agrees(prior_and_tokenizer):
    prior, _ = prior_and_tokenizer
    classes = torch.tensor([0, 3, 7, 10])
    a = prior.sample(classes, guidance=2.0, generator=seeded(4), use_cache=True)
    b = prior.sample(classes, guidance=2.0, generator=seeded(4), use_cache=False)
    assert torch.equal(a, b)  # a prior without a cache ignores the flag: there is only one path


def test_guidance_one_is_conditional_sampling(prior_and_tokenizer):
    prior, _ = prior_and_tokenizer
    classes = torch.arange(6) % 10
    assert torch.equal(prior.sample(classes, generator=seeded(2)), prior.sample(classes, guidance=1.0,
                                                                                generator=seeded(2)))


def test_save_and_load_round_trip(prior_and_tokenizer, tmp_path):
    prior, vqvae = prior_and_tokenizer
    path = str(tmp_path / f"{prior.name}.pt")
    atomic_save({"kind": prior.kind, "config": settings.to_dict(prior.cfg), "model": prior.state_dict(), "epoch": 1,
                 **vqvae.token_info(), "tokenizer_id": tokenizer_fingerprint(vqvae)}, path)
    loaded, ckpt = load_prior(path)
    assert type(loaded) is type(prior) and loaded.cfg == prior.cfg and not loaded.training
    tokens, classes = real_tokens(prior, vqvae)
    assert torch.equal(loaded.loss(tokens, classes), prior.loss(tokens, classes)) or not prior.exact_likelihood
    classes = torch.arange(4)
    assert torch.equal(loaded.sample(classes, guidance=1.5, generator=seeded(0)),
                       prior.sample(classes, guidance=1.5, generator=seeded(0)))


def test_every_edit_a_prior_claims_keeps_the_known_tokens(prior_and_tokenizer):
    prior, vqvae = prior_and_tokenizer
    known, classes = real_tokens(prior, vqvae)
    for edit in prior.edits:
        keep = sampling.keep_mask(vqvae, edit).expand_as(known)
        tokens = prior.sample(classes, guidance=1.5, generator=seeded(0), known_BL=known, known_mask_BL=keep)
        assert torch.equal(tokens[keep], known[keep]), edit
        assert tokens.shape == known.shape


def test_options_a_prior_does_not_have_are_errors_not_silently_ignored(prior_and_tokenizer):
    prior, vqvae = prior_and_tokenizer
    classes = torch.arange(2)
    with pytest.raises(TypeError):
        prior.sample(classes, temprature=0.5)  # a misspelled keyword
    if not prior.sampling_steps:
        with pytest.raises(ValueError, match="no reverse steps"):
            prior.sample(classes, steps=4)
    if not prior.reverse_process:
        with pytest.raises(ValueError, match="no reverse process"):
            prior.sample(classes, return_process=True)
    if not prior.edits:
        known, _ = real_tokens(prior, vqvae, n=2)
        with pytest.raises(ValueError, match="no edits"):
            prior.sample(classes, known_BL=known, known_mask_BL=torch.ones_like(known, dtype=torch.bool))


def test_the_gpt_refuses_to_keep_tokens_after_a_gap(tokenizers):
    prior, vqvae = make_prior("gpt", [], tokenizers)
    known, classes = real_tokens(prior, vqvae)
    keep = sampling.keep_mask(vqvae, "inpaint").expand_as(known)
    with pytest.raises(ValueError, match="prefix"):
        prior.sample(classes, known_BL=known, known_mask_BL=keep)


def test_class_dropout_replaces_the_configured_share_by_no_class(tokenizers):
    prior, _ = make_prior("gpt", ["gpt.class_dropout=0.25"], tokenizers)
    classes = torch.arange(4000) % 10
    dropped = prior.drop_classes(classes, seeded(0))
    assert torch.equal(classes, torch.arange(4000) % 10)  # the input is left alone
    share = (dropped == prior.no_class).float().mean().item()
    assert abs(share - 0.25) < 0.03 and torch.equal(dropped[dropped != prior.no_class],
                                                    classes[dropped != prior.no_class])


# --- the toy prior end to end, through the scripts' own functions ----------------------------------------------

def toy_config(tmp_path):
    cfg = ToyConfig()
    for assignment in [*config.PRESETS["tiny"], f"checkpoint_dir={tmp_path / 'ck'}",
                       f"results_dir={tmp_path / 'res'}", f"data.root={os.path.join(REPO, 'data')}"]:
        settings.apply_override(cfg, assignment)
    return checks.validate(cfg)


def test_a_toy_fourth_prior_trains_samples_saves_and_loads_through_the_registry(tmp_path, toy_registered,
                                                                                tokenizers):
    cfg = toy_config(tmp_path)
    assert "toy" in config.prior_sections(cfg)
    vqvae = tokenizers[False]
    atomic_save({"kind": "vqvae", "config": settings.to_dict(vqvae.cfg), "model": vqvae.state_dict(), "epoch": 1,
                 "tokenizer_id": tokenizer_fingerprint(vqvae)}, str(tmp_path / "ck" / "vqvae.pt"))

    transformer_train.train(cfg, "toy")

    path = tmp_path / "ck" / "toy.pt"
    prior, loaded_vqvae, ckpt = load_pair(str(path))
    assert isinstance(prior, PositionUnigram) and ckpt["kind"] == "toy" and ckpt["epoch"] == 2
    history = [row["val_loss"] for row in ckpt["history"]]
    assert history[-1] < math.log(vqvae.cfg.codebook_size) - 0.05  # it learned the codes' frequencies
    assert (tmp_path / "res" / "toy" / "samples_epoch002.png").is_file()  # _results/<name>/ by default

    npz = tmp_path / "toy.npz"
    generator.main(["--preset", "tiny", "--prior", str(path), "--n", "20", "--save", str(npz)])
    with np.load(npz) as samples:
        assert samples["images"].shape == (20, 1, 28, 28) and samples["images"].dtype == np.uint8
    with pytest.raises(SystemExit, match="reverse process"):  # capabilities it lacks are one-line errors
        generator.main(["--preset", "tiny", "--prior", str(path), "--show-process"])
    with pytest.raises(SystemExit, match="can only --edit nothing"):
        generator.main(["--preset", "tiny", "--set", f"data.root={cfg.data.root}", "--prior", str(path),
                        "--edit", "inpaint"])
