"""The tokenizer's adversary (models/discriminator.py) and the VQ-VAE loss that uses it."""
import pytest
import torch

from config import VQVAEConfig
from models.discriminator import PatchDiscriminator, adaptive_weight, generator_loss, hinge_loss
from models.vqvae import VQVAE


@pytest.mark.parametrize("size,channels,patches", [(28, 1, 7), (32, 3, 8)])
def test_one_logit_per_patch(size, channels, patches):
    logits = PatchDiscriminator(channels, (8, 16))(torch.randn(5, channels, size, size))
    assert logits.shape == (5, 1, patches, patches)


def test_hinge_loss_is_zero_only_past_the_margins():
    assert hinge_loss(torch.full((4,), 1.5), torch.full((4,), -2.0)).item() == 0.0
    # real at 0 costs 1, fake at 0 costs 1: mean of the two halves
    assert hinge_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(1.0)
    assert hinge_loss(torch.tensor([0.5]), torch.tensor([-2.0])).item() == pytest.approx(0.25)
    assert generator_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_adaptive_weight_is_the_ratio_of_the_two_gradient_norms_at_the_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    out = layer(torch.randn(6, 3))
    small, large = 0.1 * out.pow(2).mean(), 10.0 * out.sum()
    weight = adaptive_weight(small, large, layer.weight)
    grad_small, = torch.autograd.grad(small, layer.weight, retain_graph=True)
    grad_large, = torch.autograd.grad(large, layer.weight, retain_graph=True)
    assert weight.item() == pytest.approx((grad_small.norm() / (grad_large.norm() + 1e-4)).item(), rel=1e-5)
    assert not weight.requires_grad
    # scaling the adversarial loss by 10 scales the weight by 1/10: the balance does not depend on its scale
    assert adaptive_weight(small, 10 * large, layer.weight).item() == pytest.approx(weight.item() / 10, rel=1e-3)


def tiny_vqvae():
    torch.manual_seed(0)
    return VQVAE(VQVAEConfig(channels=(8, 16, 16), num_res_blocks=1, codebook_size=16, code_dim=4))


def test_without_a_discriminator_the_loss_is_mse_plus_commitment():
    model, x = tiny_vqvae(), torch.rand(4, 1, 28, 28) * 2 - 1
    loss, parts = model.loss(x)
    assert "gan_weight" not in parts and not parts["recon_BCHW"].requires_grad
    assert loss.item() > parts["mse"].item()  # + the commitment term


def test_the_adversarial_term_reaches_the_decoder_not_the_discriminator():
    model, x = tiny_vqvae(), torch.rand(4, 1, 28, 28) * 2 - 1
    judge = PatchDiscriminator(1, (8, 16)).requires_grad_(False)
    torch.manual_seed(1)  # the same draws for the quantizer's code restarts in both calls
    plain, _ = model.loss(x)
    model = tiny_vqvae()
    torch.manual_seed(1)
    loss, parts = model.loss(x, judge, gan_weight=0.5)
    assert parts["gan_weight"].item() > 0
    assert loss.item() == pytest.approx(plain.item() + parts["gan_weight"].item() * parts["adversarial"].item(),
                                        rel=1e-5)
    loss.backward()
    assert model.decoder.head[-1].weight.grad is not None
    assert all(p.grad is None for p in judge.parameters())


def test_a_wider_decoder_keeps_the_encoder_and_the_token_grid():
    torch.manual_seed(0)
    cfg = VQVAEConfig(channels=(8, 16, 16), decoder_channels=(16, 32, 32), num_res_blocks=1, codebook_size=16,
                      code_dim=4)
    model = VQVAE(cfg)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    idx = model.encode(x)
    assert idx.shape == (3, 4, 4, 1)
    assert model.decode(idx).shape == x.shape
    assert model.decoder.head[-1].in_channels == 16 and model.encoder.net[0].out_channels == 8
