"""The three scripts on the `tiny` preset, as a user runs them: train the tokenizer, train the prior, draw samples;
then the same for VAR (on the multi-scale tokenizer, `tiny_var`) and the discrete-diffusion prior, with editing.
The runs are conftest.py's session fixtures `pipeline` and `priors`, shared with the other end-to-end tests.

Real MNIST (data.root keeps its default "data"; fetched if missing); every output goes under a tmp folder.
One torch thread per process: on a busy 2-core machine two OpenMP threads make these tiny models ~100x slower.
The one-line errors that stop a script before it trains or draws are checked through the script's main(argv) in
this process (script_runs.run_in_process, checked against the command line in test_flags.py).
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import data, sampling
from pipeline.checkpoint import load_pair
from script_runs import EDIT_IMAGES, EDIT_SAMPLES, assert_one_line_error, run, run_in_process
from script_runs import ENV, REPO  # noqa: F401  (other test modules import these, and run, from here)


def open_png(path):
    with Image.open(path) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(path) as image:
        return image.format, image.size, np.asarray(image.convert("L"))


def named_grid(size, rows, cols):
    """A grid with each row's class name in a margin on its left: the grid's height, and wider than the grid."""
    width, height = grid_size_px(rows, cols)
    return size[1] == height and width + 10 < size[0] < width + 120


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
    assert fmt == "PNG" and named_grid(size, 10, 2)  # one row per digit, per_class=2
    assert pixels.std() > 10
    assert open_png(root / "res" / "transformer" / "loss.png")[0] == "PNG"


def test_generator_temperature_sweep_pngs(pipeline):
    root, _ = pipeline
    names = sorted(p.name for p in (root / "res" / "generator").glob("*.png"))
    assert "temperature_1.00.png" in names and len(names) == 7  # the sweep in config.sample.temperatures
    fmt, size, _ = open_png(root / "res" / "generator" / "temperature_1.00.png")
    assert fmt == "PNG" and named_grid(size, 10, 2)


def test_generator_npz(pipeline, tiny_cfg):
    """Each class in its share of the training images (FID compares distributions); --balanced cycles."""
    root, dirs = pipeline
    with np.load(root / "samples.npz") as f:
        images, labels = f["images"], f["labels"]
    assert images.dtype == np.uint8 and images.shape == (30, 1, 28, 28)
    shares = sampling.proportional_counts(30, data.class_proportions(tiny_cfg.data))
    assert labels.dtype == np.int64 and np.bincount(labels, minlength=10).tolist() == shares.tolist()
    assert images.std() > 10
    assert not [f for f in os.listdir(root) if ".tmp" in f]
    balanced = root / "balanced.npz"
    run_in_process("generator.py", *dirs, "--n", "30", "--balanced", "--save", str(balanced))
    with np.load(balanced) as f:
        assert np.array_equal(f["labels"], np.arange(30) % 10)


def test_generator_is_reproducible_with_the_same_seed(pipeline):
    root, dirs = pipeline
    run("generator.py", *dirs, "--n", "30", "--save", str(root / "again.npz"), "--no-kv-cache")
    with np.load(root / "samples.npz") as a, np.load(root / "again.npz") as b:
        assert np.array_equal(a["images"], b["images"])  # same seed, with and without the KV cache


def test_resume_with_another_config_fails_with_one_line(pipeline):
    root, dirs = pipeline
    before = torch.load(root / "ck" / "gpt.pt", weights_only=True)["epoch"]
    result = run_in_process("transformer_train.py", *dirs, "--resume", "--set", "gpt_train.lr=0.01", check=False)
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
    assert "finished its run (1 epoch); nothing to resume" in result.stdout
    assert path.stat().st_mtime_ns == mtime  # nothing left to train, nothing rewritten


def test_generator_with_missing_prior_fails_with_one_line(pipeline):
    root, dirs = pipeline
    result = run_in_process("generator.py", *dirs, "--prior", str(root / "nonexistent.pt"), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "nonexistent.pt" in lines[0] and "Traceback" not in result.stderr


def test_generator_with_swapped_checkpoints_fails_with_one_line(pipeline):
    root, dirs = pipeline
    result = run_in_process("generator.py", *dirs, "--prior", str(root / "ck" / "vqvae.pt"), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "vqvae" in lines[0], result.stderr


# --- VAR and discrete diffusion ----------------------------------------------------------------------------------

def test_multiscale_tokenizer_checkpoint_and_scale_strip(priors):
    root, _ = priors
    ckpt = torch.load(root / "ck" / "vqvae_multiscale.pt", weights_only=True)
    assert ckpt["kind"] == "vqvae" and list(ckpt["config"]["scales"]) == [1, 2, 3, 4] and ckpt["epoch"] == 1
    names = sorted(p.name for p in (root / "res" / "vqvae").glob("*.png"))
    assert names == ["multiscale_loss.png", "multiscale_recon_epoch001.png", "multiscale_scales_epoch001.png"]
    fmt, size, pixels = open_png(root / "res" / "vqvae" / "multiscale_scales_epoch001.png")
    assert fmt == "PNG" and size == grid_size_px(8, 4 + 1)  # 8 digits; one column per scale prefix + the original
    assert pixels.std() > 10
    assert open_png(root / "res" / "vqvae" / "multiscale_recon_epoch001.png")[1] == grid_size_px(2, 8)


def test_var_checkpoint_samples_and_pairing(priors):
    root, _ = priors
    prior, vqvae, ckpt = load_pair(str(root / "ck" / "var.pt"))  # finds vqvae_multiscale.pt beside it
    assert prior.kind == "var" and vqvae.multiscale and prior.scales == (1, 2, 3, 4) and prior.L == 30
    assert ckpt["epoch"] == 1 and np.isfinite(ckpt["history"][0]["val_loss"])
    tokenizer = torch.load(root / "ck" / "vqvae_multiscale.pt", weights_only=True)
    assert ckpt["tokenizer_id"] == tokenizer["tokenizer_id"]
    fmt, size, pixels = open_png(root / "res" / "var" / "samples_epoch001.png")
    # after 8 tokenizer steps the multi-scale tokenizer still decodes grey blobs, so only "not one flat colour"
    assert fmt == "PNG" and named_grid(size, 10, 2) and pixels.std() > 1
    assert open_png(root / "res" / "var" / "loss.png")[0] == "PNG"
    assert not [f for f in os.listdir(root / "ck") if ".tmp" in f]


def test_diffusion_checkpoint_samples_and_reverse_process(priors):
    root, _ = priors
    prior, vqvae, ckpt = load_pair(str(root / "ck" / "diffusion.pt"))  # finds vqvae.pt beside it
    assert prior.kind == "diffusion" and not vqvae.multiscale and prior.cfg.noise == "mask"
    res = root / "res" / "diffusion"
    fmt, size, pixels = open_png(res / "samples_epoch001.png")
    assert fmt == "PNG" and named_grid(size, 10, 2) and pixels.std() > 10
    steps = prior.forward_passes()  # 4 reverse steps in the tiny preset
    assert steps == 4
    fmt, size, _ = open_png(res / "reverse_process_strip.png")
    assert fmt == "PNG" and named_grid(size, 10, steps)  # one row per digit, one column per step
    with Image.open(res / "reverse_process.gif") as gif:
        assert gif.format == "GIF" and gif.is_animated
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        # the final frame is held 3 extra frames (Pillow may merge identical frames into one longer one)
        assert gif.n_frames in (steps, steps + 3)
        assert sum(durations) == 250 * (steps + 3)


def test_var_and_diffusion_npz(priors, tiny_cfg):
    root, _ = priors
    shares = sampling.proportional_counts(30, data.class_proportions(tiny_cfg.data)).tolist()
    for name in ("var.npz", "diffusion.npz"):
        with np.load(root / name) as f:
            images, labels = f["images"], f["labels"]
        assert images.dtype == np.uint8 and images.shape == (30, 1, 28, 28), name
        assert labels.dtype == np.int64 and np.bincount(labels, minlength=10).tolist() == shares, name
        assert images.std() > (1 if name == "var.npz" else 10), name  # see test_var_checkpoint_samples_and_pairing
        assert len({image.tobytes() for image in images}) > 10, name  # samples differ from each other
    assert not [f for f in os.listdir(root) if ".tmp" in f]


def test_edit_pngs(priors):
    root, _ = priors
    for name in ("var_edit_inpaint.png", "diffusion_edit_outpaint.png"):
        fmt, size, pixels = open_png(root / "res" / "generator" / name)
        assert fmt == "PNG" and size == grid_size_px(EDIT_IMAGES, EDIT_SAMPLES + 2), name  # original, masked, results
        assert pixels.std() > 10  # the original digits are in the first column


def test_diffusion_show_process(priors):
    root, dirs = priors
    out = root / "process"
    run("generator.py", *dirs, "--prior", "diffusion", "--show-process", "--steps", "3", "--out", str(out))
    assert named_grid(open_png(out / "diffusion_reverse_process_strip.png")[1], 10, 3)
    with Image.open(out / "diffusion_reverse_process.gif") as gif:
        assert gif.is_animated


def test_var_without_a_multiscale_tokenizer_fails_with_one_line(pipeline):
    root, dirs = pipeline  # holds only the single-scale vqvae.pt
    result = run_in_process("transformer_train.py", *dirs, "--prior", "var", check=False)
    assert_one_line_error(result, "vqvae_multiscale.pt")
    assert not (root / "ck" / "var.pt").exists()


def test_var_without_a_multiscale_tokenizer_says_how_to_train_one(pipeline):
    _, dirs = pipeline
    result = run_in_process("transformer_train.py", *dirs, "--prior", "var", check=False)
    assert_one_line_error(result, "--preset tiny_var")  # the run's own preset's multi-scale sibling


def test_var_on_a_single_scale_tokenizer_fails_with_one_line(pipeline):
    root, dirs = pipeline
    result = run_in_process("transformer_train.py", *dirs, "--prior", "var", "--vqvae",
                            str(root / "ck" / "vqvae.pt"), check=False)
    assert_one_line_error(result, "--preset tiny_var", "single-scale")


def test_diffusion_on_the_multiscale_tokenizer_fails_with_one_line(priors):
    root, dirs = priors
    result = run_in_process("transformer_train.py", *dirs, "--prior", "diffusion", "--vqvae",
                            str(root / "ck" / "vqvae_multiscale.pt"), "--overwrite", check=False)  # diffusion.pt exists
    assert_one_line_error(result, "multi-scale", "--prior var")


def test_gpt_inpainting_fails_with_one_line(pipeline):
    _, dirs = pipeline
    result = run_in_process("generator.py", *dirs, "--prior", "gpt", "--edit", "inpaint", check=False)
    assert_one_line_error(result, "complete", "var", "diffusion")


def test_show_process_of_a_var_fails_with_one_line(priors):
    _, dirs = priors
    result = run_in_process("generator.py", *dirs, "--prior", "var", "--show-process", check=False)
    assert_one_line_error(result, "diffusion")


@pytest.mark.parametrize("script", ["vqvae_train.py", "transformer_train.py"])
def test_a_new_run_over_a_trained_checkpoint_is_refused_with_one_line(pipeline, script):
    root, dirs = pipeline
    path = root / "ck" / ("vqvae.pt" if script == "vqvae_train.py" else "gpt.pt")
    mtime = path.stat().st_mtime_ns
    line = assert_one_line_error(run_in_process(script, *dirs, check=False), str(path), "--resume", "--overwrite")
    assert "already holds a trained model" in line
    assert path.stat().st_mtime_ns == mtime
