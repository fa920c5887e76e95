"""The three scripts on the `tiny` preset, as a user runs them: train the tokenizer, train the prior, draw samples.

Real MNIST (data.root keeps its default "data"; fetched if missing); every output goes under tmp_path.
One torch thread per process: on a busy 2-core machine two OpenMP threads make these tiny models ~100x slower.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint import load_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(script, *args, check=True):
    result = subprocess.run([sys.executable, script, "--preset", "tiny", *args], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    dirs = ["--set", f"checkpoint_dir={root / 'ck'}", "--set", f"results_dir={root / 'res'}"]
    run("vqvae_train.py", *dirs)
    run("transformer_train.py", *dirs)
    run("generator.py", *dirs)
    run("generator.py", *dirs, "--n", "30", "--save", str(root / "samples.npz"))
    return root, dirs


def open_png(path):
    with Image.open(path) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(path) as image:
        return image.format, image.size, np.asarray(image.convert("L"))


def grid_size_px(rows, cols, tile=28, pad=2):
    return cols * (tile + pad) + pad, rows * (tile + pad) + pad  # (width, height) of torchvision's make_grid


def test_checkpoints_exist_and_pair_up(pipeline):
    root, _ = pipeline
    assert (root / "ck" / "vqvae.pt").is_file() and (root / "ck" / "gpt.pt").is_file()
    prior, vqvae, ckpt = load_pair(str(root / "ck" / "gpt.pt"), str(root / "ck" / "vqvae.pt"))
    assert vqvae.grid_shape == (4, 4, 1) and prior.grid_shape == (4, 4, 1) and prior.V == 32
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1 and np.isfinite(ckpt["history"][0]["val_loss"])
    assert not [f for f in os.listdir(root / "ck") if ".tmp" in f]


def test_vqvae_reconstruction_png(pipeline):
    root, _ = pipeline
    pngs = sorted((root / "res" / "vqvae").glob("recon_epoch*.png"))
    assert [p.name for p in pngs] == ["recon_epoch001.png"]
    fmt, size, pixels = open_png(pngs[0])
    assert fmt == "PNG" and size == grid_size_px(2, 8)  # originals over reconstructions, num_show=8
    assert pixels.std() > 10  # not a blank image
    assert open_png(root / "res" / "vqvae" / "loss.png")[0] == "PNG"


def test_transformer_sample_png(pipeline):
    root, _ = pipeline
    fmt, size, pixels = open_png(root / "res" / "transformer" / "samples_epoch001.png")
    assert fmt == "PNG" and size == grid_size_px(10, 2)  # one row per digit, per_class=2
    assert pixels.std() > 10
    assert open_png(root / "res" / "transformer" / "loss.png")[0] == "PNG"


def test_generator_temperature_sweep_pngs(pipeline):
    root, _ = pipeline
    names = sorted(p.name for p in (root / "res" / "generator").glob("*.png"))
    assert "temperature_1.00.png" in names and len(names) == 7  # the sweep in config.sample.temperatures
    fmt, size, _ = open_png(root / "res" / "generator" / "temperature_1.00.png")
    assert fmt == "PNG" and size == grid_size_px(10, 2)


def test_generator_npz(pipeline):
    root, _ = pipeline
    with np.load(root / "samples.npz") as f:
        images, labels = f["images"], f["labels"]
    assert images.dtype == np.uint8 and images.shape == (30, 1, 28, 28)
    assert labels.dtype == np.int64 and np.array_equal(labels, np.arange(30) % 10)
    assert images.std() > 10
    assert not [f for f in os.listdir(root) if ".tmp" in f]


def test_generator_is_reproducible_with_the_same_seed(pipeline):
    root, dirs = pipeline
    run("generator.py", *dirs, "--n", "30", "--save", str(root / "again.npz"), "--no-kv-cache")
    with np.load(root / "samples.npz") as a, np.load(root / "again.npz") as b:
        assert np.array_equal(a["images"], b["images"])  # same seed, with and without the KV cache


def test_resume_with_another_config_fails_with_one_line(pipeline):
    root, dirs = pipeline
    before = torch.load(root / "ck" / "gpt.pt", weights_only=True)["epoch"]
    result = run("transformer_train.py", *dirs, "--resume", "--set", "gpt_train.epochs=2", check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "another config" in lines[0] and "gpt_train" in lines[0]
    assert "Traceback" not in result.stderr
    assert torch.load(root / "ck" / "gpt.pt", weights_only=True)["epoch"] == before


def test_resume_of_a_finished_run_with_the_same_config_does_nothing(pipeline):
    root, dirs = pipeline
    path = root / "ck" / "vqvae.pt"
    mtime = path.stat().st_mtime_ns
    result = run("vqvae_train.py", *dirs, "--resume")
    assert "resuming after epoch 1" in result.stdout
    assert path.stat().st_mtime_ns == mtime  # nothing left to train, nothing rewritten


def test_generator_with_missing_prior_fails_with_one_line(pipeline):
    root, dirs = pipeline
    result = run("generator.py", *dirs, "--prior", str(root / "nonexistent.pt"), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "nonexistent.pt" in lines[0] and "Traceback" not in result.stderr


def test_generator_with_swapped_checkpoints_fails_with_one_line(pipeline):
    root, dirs = pipeline
    result = run("generator.py", *dirs, "--prior", str(root / "ck" / "vqvae.pt"), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "vqvae" in lines[0], result.stderr
