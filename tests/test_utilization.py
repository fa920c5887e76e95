"""The FLOP counts behind the MFU figures: checked against hand counts for tiny configs and against torch's own
FLOP counter, and benchmark.py --utilization end to end on the tiny preset."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from models.transformer import block_flops
from models.vqvae import VQVAE, conv_flops
from pipeline import settings, utilization
from pipeline.checkpoint import build_prior
from test_end_to_end import run


def cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch 2.14's counter has no entry for the CPU attention kernel (it counts it as 0 FLOPs; 2.15 counts it):
# give it the same formula torch uses for the GPU kernels, so the check means the same on every torch version
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops}


def torch_count(fn):
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


def test_block_flops_by_hand():
    # 3 tokens attending to 5, d = 4, MLP ratio 2: per token 8*16 + 4*2*16 + 4*5*4 = 128 + 128 + 80 = 336
    assert block_flops(3, 5, 4, 2) == 3 * 336


def test_conv_flops_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert conv_flops(conv, torch.zeros(2, 3, 5, 5)) == 2 * 8 * 5 * 5 * 3 * 3 * 3  # per image, not per batch
    strided = torch.nn.Sequential(conv, torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 1, stride=2))
    assert conv_flops(strided, torch.zeros(1, 3, 5, 5)) == 2 * 8 * 25 * 27 + 2 * 4 * 9 * 8


@pytest.fixture
def tiny_models(tiny_cfg):
    vqvae = VQVAE(tiny_cfg.vqvae).eval()
    var_cfg = settings.build_config("tiny_var")
    multi = VQVAE(var_cfg.vqvae).eval()
    priors = {kind: build_prior(kind, settings.to_dict(getattr(tiny_cfg, kind)), tok.token_info(), tok).eval()
              for kind, tok in (("gpt", vqvae), ("diffusion", vqvae), ("var", multi))}
    return vqvae, priors


def test_the_gpt_by_hand_and_by_torchs_counter(tiny_cfg, tiny_models):
    _, priors = tiny_models
    gpt, g = priors["gpt"], tiny_cfg.gpt
    L, d, V = 16, g.d_model, tiny_cfg.vqvae.codebook_size  # the tiny tokenizer: 4x4x1 tokens
    per_token = 8 * d * d + 4 * g.mlp_ratio * d * d + 4 * L * d
    assert gpt.flops_per_sequence() == g.n_layer * L * per_token + 2 * L * d * V
    tokens, classes = torch.zeros(1, L, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    assert torch_count(lambda: gpt.loss(tokens, classes)) == gpt.flops_per_sequence()


@pytest.mark.parametrize("kind", ["diffusion", "var"])
def test_the_other_priors_agree_with_torchs_counter_within_a_few_percent(tiny_models, kind):
    prior = tiny_models[1][kind]
    tokens, classes = torch.zeros(1, prior.L, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    counted = torch_count(lambda: prior.loss(tokens, classes))
    # what the count leaves out: diffusion's noise-level MLP, VAR's frozen phi convs building its inputs
    assert prior.flops_per_sequence() == pytest.approx(counted, rel=0.05)


def test_the_vqvae_decoder_and_encoder_agree_with_torchs_counter(tiny_cfg, tiny_models):
    vqvae, _ = tiny_models
    v = tiny_cfg.vqvae
    latent = torch.zeros(1, v.num_codebooks * v.code_dim, v.grid_size, v.grid_size)
    image = torch.zeros(1, v.image_channels, v.image_size, v.image_size)
    assert vqvae.flops() == {"encoder": torch_count(lambda: vqvae.encoder(image)),
                             "decoder": torch_count(lambda: vqvae.decoder(latent))}


def test_sampling_flops_follow_the_capabilities(tiny_models):
    _, priors = tiny_models
    gpt, diffusion = priors["gpt"], priors["diffusion"]
    assert gpt.sampling_flops(None, 1.0) == gpt.flops_per_sequence()  # KV cache: each token once
    assert gpt.sampling_flops(None, 1.5) == 2 * gpt.flops_per_sequence()  # guidance: two sequences
    steps = diffusion.forward_passes(4)
    assert diffusion.sampling_flops(4, 1.0) == steps * diffusion.flops_per_sequence()


def test_matmul_peak_is_a_rate():
    peak = utilization.matmul_peak(torch.device("cpu"), n=64, repeats=2)
    assert math.isfinite(peak) and peak > 0


def test_benchmark_utilization_writes_its_section(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\n<!-- mnist -->\n## MNIST\n\nkept\n<!-- /mnist -->\n")
    result = run("benchmark.py", "--utilization", "--repeats", "1", "--batch-sizes", "20", "--out", str(out))
    text = out.read_text()
    assert "kept" in text and "<!-- utilization-cpu -->" in text and "matmul peak" in text.lower()
    for stage in ("GPT", "VAR", "diffusion", "VQ-VAE: training", "multi-scale VQ-VAE: training"):
        assert stage in text, stage
    assert "MFU" in result.stdout
