"""Speed as a fraction of the machine: model-FLOPs utilization (MFU), as nanoGPT's estimate_mfu reports it.

    achieved FLOP/s = images/s x FLOPs per image (counted from the config, models.transformer.block_flops and
                      models.vqvae.conv_flops)
    MFU             = achieved FLOP/s / the attainable matmul peak of this device (a large torch.mm, timed here)

FLOPs per image: sampling = the prior's sampling_flops (one whole-sequence forward with a KV cache, one per reverse
step without; guidance doubles it) + the decoder; training = 3 x the forward (the backward costs about twice the
forward). Speed does not depend on the weights, so the models are built untrained from the config: no checkpoint
is needed, and the figures describe exactly the config's architecture.
"""
import time

import torch

import config
from models.prior import prior_class
from models.vqvae import VQVAE
from pipeline import devices, settings
from pipeline.checkpoint import build_prior


def matmul_peak(device, dtype=torch.float32, n=2048, repeats=5):
    """The best FLOP/s of an n x n @ n x n matmul on `device` in `dtype` (2 n^3 FLOPs each), after a warm-up."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):
        devices.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        devices.synchronize(device)
        if i:  # the first run warms up
            best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def peaks(device):
    """{'float32': FLOP/s, 'bfloat16': FLOP/s} of this device (bf16 where it runs at all)."""
    found = {"float32": matmul_peak(device)}
    try:
        found["bfloat16"] = matmul_peak(device, torch.bfloat16)
    except RuntimeError:  # no bf16 matmul on this device
        pass
    return found


def untrained_models(cfg, device):
    """[(prior, its tokenizer)] for every prior with a config section, built untrained from the config; VAR's
    multi-scale tokenizer comes from the dataset's `_var` preset. Priors whose tokenizer has no preset are left
    out."""
    single = VQVAE(cfg.vqvae).to(device).eval()
    multi_preset = settings.tokenizer_preset(cfg.data.dataset, True, cfg.preset)
    multi = (VQVAE(settings.build_config(multi_preset or "mnist_var", [f"data.dataset={cfg.data.dataset}"]).vqvae)
             .to(device).eval() if multi_preset else None)
    models = []
    for kind in config.prior_sections(cfg):
        tokenizer = multi if prior_class(kind).multiscale_tokenizer else single
        if tokenizer is not None:
            prior = build_prior(kind, settings.to_dict(getattr(cfg, kind)), tokenizer.token_info(), tokenizer)
            models.append((prior.to(device).eval(), tokenizer))
    return models


def row(stage, flops_per_image, images_per_s, peak):
    """One table row: FLOPs per image, images/s, achieved GFLOP/s and the share of the peak."""
    achieved = flops_per_image * images_per_s
    return {"stage": stage, "mflops_per_image": flops_per_image / 1e6, "images_per_s": images_per_s,
            "gflops_per_s": achieved / 1e9, "mfu": achieved / peak}
