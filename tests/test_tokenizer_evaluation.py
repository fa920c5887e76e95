"""A tokenizer judged on its own: `evaluate.py --reconstructions` (FID and accuracy of its reconstructions of the
test split, PSNR, SSIM, code use) and its `--save` npz, which scores as the same row when read back; SSIM against
pytorch-msssim."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.ssim import ssim_per_image
from pipeline.tokenizer_metrics import psnr_ssim
from script_runs import run_in_process


def test_ssim_is_one_for_equal_images_and_falls_with_noise():
    torch.manual_seed(0)
    a = torch.rand(4, 3, 32, 32)
    noisy = [(a + s * torch.randn_like(a)).clamp(0, 1) for s in (0.05, 0.2)]
    assert torch.allclose(ssim_per_image(a, a), torch.ones(4))
    assert (ssim_per_image(a, noisy[0]) > ssim_per_image(a, noisy[1])).all()
    images = (a * 255).round().to(torch.uint8)
    assert psnr_ssim(images, images) == (100.0, pytest.approx(1.0))


@pytest.mark.parametrize("channels, size, dtype", [(1, 28, torch.float32), (3, 32, torch.float64)])
def test_ssim_matches_pytorch_msssim(channels, size, dtype):
    """In float32 as the loss computes it, and in float64 as the metric does."""
    oracle = pytest.importorskip("pytorch_msssim")
    torch.manual_seed(1)
    a = torch.rand(5, channels, size, size)
    b = (0.6 * a + 0.3 * torch.rand_like(a)).clamp(0, 1)
    expected = oracle.ssim(a, b, data_range=1.0, size_average=False)
    assert torch.allclose(ssim_per_image(a.to(dtype), b.to(dtype)).float(), expected, atol=1e-5)


def test_reconstructions_are_scored_and_saved_as_a_sample_file(trained_tokenizers, tmp_path):
    tokenizer = trained_tokenizers[0] / "ck" / "vqvae.pt"
    saved = tmp_path / "recon.npz"
    result = run_in_process("evaluate.py", "--reconstructions", "--vqvae", str(tokenizer), "--save", str(saved),
                            "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    stats, row = report["tokenizer"], report["rows"]["reconstructions of test"]
    assert stats["quantizer"] == "vq" and stats["codes"] == 32 and stats["bits_per_token"] == 5
    assert 0 < stats["psnr"] < 100 and -1 <= stats["ssim"] <= 1 and 0 < stats["usage"][0] <= 1
    assert set(report["rows"]) == {"real train (floor)", "reconstructions of test"}
    with np.load(saved) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (row["n"], 1, 28, 28)
        assert len(f["labels"]) == row["n"] and f["labels"].min() >= 0
    read_back = run_in_process("evaluate.py", str(saved), "--vqvae", str(tokenizer), "--no-reference", "--json")
    assert json.loads(read_back.stdout.strip().splitlines()[-1])["rows"]["recon.npz"]["fid"] == pytest.approx(row["fid"])


@pytest.mark.parametrize("args, message", [
    (["--save", "x.npz"], "add --reconstructions"),
    (["--reconstructions", "s.npz"], "give no sample file"),
    (["--reconstructions", "--temperature", "1.0"], "--temperature does nothing when scoring reconstructions"),
])
def test_reconstruction_flags_that_cannot_work_are_one_line(args, message):
    result = run_in_process("evaluate.py", *args, check=False)
    assert result.returncode == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_benchmark_puts_tokenizers_side_by_side_in_a_table_and_a_picture(trained_tokenizers, tmp_path):
    single, multi = (root / "ck" / name for root, name in zip(trained_tokenizers, ("vqvae.pt", "vqvae_multiscale.pt")))
    picture = tmp_path / "side_by_side.png"
    result = run_in_process("benchmark.py", "--tokenizers", str(single), str(multi), "--picture", str(picture))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and f"vq ({single})" in rows[1] and "multi-scale" in rows[2] and "1x1+2x2+3x3+4x4" in rows[2]
    with Image.open(picture) as image:  # the test images, then one row per tokenizer
        assert image.height > 3 * 28
