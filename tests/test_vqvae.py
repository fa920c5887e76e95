"""VQ-VAE: shapes for every reachable grid and codebook count, and decode(encode(x)) == the training reconstruction."""
import pytest
import torch

from models.vqvae import VQVAE, down_sizes
from models.vqvae import reachable_grid_sizes
from pipeline import settings


def tiny_vqvae(grid_size=4, num_codebooks=1):
    cfg = settings.build_config("tiny", [f"vqvae.grid_size={grid_size}", f"vqvae.num_codebooks={num_codebooks}"])
    torch.manual_seed(0)
    return VQVAE(cfg.vqvae)


def test_down_sizes_follow_ceil_halving():
    assert down_sizes(28, 7) == [28, 14, 7]
    assert down_sizes(28, 4) == [28, 14, 7, 4]
    assert down_sizes(28, 2) == [28, 14, 7, 4, 2]
    assert down_sizes(32, 8) == [32, 16, 8]


@pytest.mark.parametrize("num_codebooks", [1, 2])
@pytest.mark.parametrize("grid_size", reachable_grid_sizes(28))  # 14, 7, 4, 2, 1
def test_encode_and_decode_shapes(grid_size, num_codebooks):
    model = tiny_vqvae(grid_size, num_codebooks).eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    idx = model.encode(x)
    assert model.grid_shape == (grid_size, grid_size, num_codebooks)
    assert idx.shape == (3, grid_size, grid_size, num_codebooks)
    assert idx.min() >= 0 and idx.max() < model.cfg.codebook_size
    assert model.decode(idx).shape == (3, 1, 28, 28)
    recon, idx_train, commitment, perplexity = model.train()(x)
    assert recon.shape == (3, 1, 28, 28)
    assert idx_train.shape == idx.shape and perplexity.shape == (num_codebooks,)


@pytest.mark.parametrize("grid_size,num_codebooks", [(7, 1), (4, 2), (2, 2)])
def test_decode_of_encode_equals_training_forward_in_eval_mode(grid_size, num_codebooks):
    model = tiny_vqvae(grid_size, num_codebooks)
    model.train()(torch.rand(8, 1, 28, 28) * 2 - 1)  # one training pass: codebooks initialised from the data
    model.eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    recon, idx, _, _ = model(x)
    assert torch.equal(model.encode(x), idx)
    assert torch.allclose(model.decode(model.encode(x)), recon, atol=1e-5)


def test_gradients_reach_encoder_and_decoder_but_not_codebooks():
    model = tiny_vqvae(4, 2).train()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    recon, _, commitment, _ = model(x)
    (torch.nn.functional.mse_loss(recon, x) + commitment).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert not any(b.requires_grad for b in model.quantizer.buffers())


def test_different_codebooks_read_different_latent_channels():
    model = tiny_vqvae(4, 2).eval()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    idx = model.encode(x)
    changed = idx.clone()
    changed[..., 1] = (changed[..., 1] + 1) % model.cfg.codebook_size
    q0, q1 = model.quantizer.lookup(idx), model.quantizer.lookup(changed)
    D = model.cfg.code_dim
    assert torch.equal(q0[:, :D], q1[:, :D])          # codebook 0's channels untouched
    assert not torch.equal(q0[:, D:], q1[:, D:])      # codebook 1's channels changed


@pytest.mark.parametrize("grid_size", [16, 8, 4])
def test_rgb_32x32_images_encode_and_decode_in_colour(grid_size):
    cfg = settings.build_config("tiny", ["data.dataset=cifar10", f"vqvae.grid_size={grid_size}"]).vqvae
    assert (cfg.image_size, cfg.image_channels) == (32, 3)
    model = VQVAE(cfg).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    idx = model.encode(x)
    assert idx.shape == (2, grid_size, grid_size, 1)
    assert model.decode(idx).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("size_in, size_out", [(4, 7), (7, 14), (14, 28), (8, 16), (16, 32), (2, 4), (1, 2)])
def test_decoding_upsamples_exactly_as_f_interpolate(size_in, size_out):
    import torch.nn.functional as F
    from models.vqvae import upsample_nearest
    h = torch.randn(3, 5, size_in, size_in)
    with torch.no_grad():
        assert torch.equal(upsample_nearest(h, size_out), F.interpolate(h, size=(size_out, size_out), mode="nearest"))


def test_decoding_in_chunks_gives_the_same_images(monkeypatch):
    """VQVAE.decode runs the decoder on DECODE_CHUNK images at a time: every image, in order, the same values up to
    float rounding (a convolution may pick another algorithm for another batch size)."""
    import models.vqvae as vqvae_module
    model = VQVAE(settings.build_config("tiny").vqvae).eval()
    idx = model.encode(torch.rand(5, 1, 28, 28) * 2 - 1)
    whole = model.decode(idx)
    monkeypatch.setattr(vqvae_module, "DECODE_CHUNK", 2)
    assert torch.allclose(model.decode(idx), whole, atol=1e-6)


def test_ssim_weight_adds_the_structural_term_in_float32_under_autocast():
    """loss = MSE + beta * commitment + w * (1 - SSIM of the [0, 1] pixels), the SSIM computed in float32 even where
    the rest runs in bfloat16, and its gradient reaches the decoder."""
    from models.ssim import ssim_per_image
    cfg = settings.build_config("tiny", ["vqvae.ssim_weight=0.5"])
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    torch.manual_seed(0)
    model = VQVAE(cfg.vqvae).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    recon, _, commitment, _ = model(x)
    model.load_state_dict(state)  # the EMA codebooks moved: the same forward again from the same state and seed
    torch.manual_seed(1)
    loss, parts = model.loss(x)
    ssim = ssim_per_image((recon + 1) / 2, (x + 1) / 2).mean()
    expected = torch.nn.functional.mse_loss(recon, x) + 0.25 * commitment + 0.5 * (1 - ssim)
    assert torch.allclose(loss, expected, atol=1e-6) and torch.allclose(parts["ssim"], ssim, atol=1e-6)
    loss.backward()
    assert model.decoder.head[-1].weight.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = ssim_per_image((recon.detach().bfloat16() + 1) / 2, ((x + 1) / 2).bfloat16())
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
