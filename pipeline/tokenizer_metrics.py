"""How good a tokenizer is on its own, on real images: the reconstruction error (MSE, PSNR), the structural
similarity (SSIM), and how its codes are used (the share of each codebook's codes in use, and their perplexity).

vqvae_train.py reports the MSE and the code use after every epoch; `evaluate.py --reconstructions` adds PSNR and SSIM
and the evaluator's FID and class accuracy of the reconstructions.

SSIM is models/ssim.py's (Wang et al. 2004 as most papers compute it), in float64, averaged over the images.
"""
import math

import torch
import torch.nn.functional as F

from models.ssim import ssim_per_image
from pipeline import data, devices, metrics


def token_groups(vqvae, idx):
    """The token maps whose code use is reported: one per codebook, or one per scale (multi-scale)."""
    if vqvae.multiscale:
        return [i.cpu() for i in idx]
    return [idx[..., k].cpu() for k in range(idx.shape[-1])]


@torch.no_grad()
def reconstruction_stats(vqvae, images_uint8, device, dtype, batch_size=1000):
    """Reconstruction MSE (pixels in [0, 1]) and, per codebook (multi-scale: per scale), usage (codes used / V) and
    perplexity, over the given images."""
    vqvae.eval()
    K = len(vqvae.cfg.scales) if vqvae.multiscale else vqvae.cfg.num_codebooks
    V = vqvae.cfg.codebook_size
    counts_KV = torch.zeros(K, V)
    squared_error = 0.0
    for i in range(0, len(images_uint8), batch_size):
        x = data.to_model_range(images_uint8[i:i + batch_size]).to(device)
        with devices.autocast(device, dtype):
            idx = vqvae.encode(x)
            recon = vqvae.decode(idx)
        squared_error += F.mse_loss(recon.float().clamp(-1, 1), x, reduction="sum").item() / 4  # [-1,1] -> [0,1]
        for k, group in enumerate(token_groups(vqvae, idx)):
            counts_KV[k] += torch.bincount(group.flatten(), minlength=V).float()
    p_KV = counts_KV / counts_KV.sum(1, keepdim=True)
    perplexity = torch.exp(-(p_KV * p_KV.clamp_min(1e-10).log()).sum(1))
    return {"val_mse": squared_error / images_uint8.numel(),
            "usage": [(counts_KV[k] > 0).float().mean().item() for k in range(K)],
            "perplexity": perplexity.tolist()}


def psnr_ssim(recon_uint8, real_uint8, batch_size=1000):
    """Mean PSNR (dB, per image, pixels in [0, 1]; a perfect image counts as 100 dB) and mean SSIM of the pairs."""
    psnr_total, ssim_total = 0.0, 0.0
    for i in range(0, len(real_uint8), batch_size):
        a = recon_uint8[i:i + batch_size].double() / 255
        b = real_uint8[i:i + batch_size].double() / 255
        mse_B = (a - b).pow(2).flatten(1).mean(1)
        psnr_total += (10 * torch.log10(1 / mse_B.clamp_min(1e-10))).clamp_max(100).sum().item()
        ssim_total += ssim_per_image(a, b).sum().item()
    n = len(real_uint8)
    return psnr_total / n, ssim_total / n


def bits_per_token(vqvae):
    """What one token can say: log2 of its vocabulary."""
    return math.log2(vqvae.cfg.codebook_size)


def judge(vqvae, classifier, test_images, test_labels, test_feats, device):
    """A tokenizer on the test split as a prior's samples are judged (the evaluator's FID, accuracy, ... of its
    reconstructions: `test_feats` are the real test images' features), with its own statistics beside:
    (reconstructions uint8, the score row, the tokenizer's statistics)."""
    recon = metrics.reconstructions(vqvae, test_images, device)
    row = metrics.score(classifier, recon, test_labels, test_feats, device)
    psnr, ssim = psnr_ssim(recon, test_images)
    stats = {"quantizer": "multi-scale" if vqvae.multiscale else vqvae.cfg.quantizer,
             "tokens": "+".join(f"{s}x{s}" for s in vqvae.cfg.scales) if vqvae.multiscale
             else "x".join(map(str, vqvae.grid_shape)),
             "codes": vqvae.cfg.codebook_size, "bits_per_token": bits_per_token(vqvae),
             **reconstruction_stats(vqvae, test_images, device, None), "psnr": psnr, "ssim": ssim}
    return recon, row, stats
