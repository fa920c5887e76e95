"""The same commands on the other datasets, on the `tiny` preset: Fashion-MNIST (its real files, fetched as MNIST's
are) through every script, and CIFAR-10 in colour from a synthetic archive in CIFAR-10's own format; a checkpoint of
one dataset is refused by a run on another with one line.

One torch thread per process (see test_end_to_end.py); every output goes under tmp_path.
"""
import json
import os

import numpy as np
import pytest
import torch
from pipeline import fetch, settings
from PIL import Image

from script_runs import run_in_process, run_together
from test_data import write_cifar_archive
from test_end_to_end import assert_one_line_error, grid_size_px, run


def png(path):
    """(mode, size, pixels as int16 RGB) of a complete, valid PNG."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.mode, image.size, np.asarray(image.convert("RGB")).astype(np.int16)


def grid_width(cols, tile):
    return grid_size_px(1, cols, tile)[0]


# --- Fashion-MNIST: every script ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    args = ["--set", f"checkpoint_dir={root / 'ck'}", "--set", f"results_dir={root / 'res'}", "--set", "run=",
            "--set", "data.dataset=fashion_mnist"]
    run("vqvae_train.py", *args)
    run("transformer_train.py", *args)
    # then the runs that read the trained checkpoints and write files of their own, side by side
    run_together(("generator.py", *args), ("generator.py", *args, "--n", "20", "--save", str(root / "samples.npz")),
                 # a classifier of 64 images: where it is written is what is checked (the scores use the shipped one)
                 ("evaluate.py", *args, "--train-classifier", "--set", "data.train_limit=64"))
    (root / "RESULTS.md").write_text("# Results\n\n<!-- mnist -->\n## MNIST\nkept as it was\n<!-- /mnist -->\n")
    # drawn at the GPT's own temperature, read from its config section at sampling time
    evaluated, _ = run_together(("evaluate.py", *args, "--set", "gpt.temperature=0.9", "--n", "40", "--json"),
                                ("benchmark.py", *args, "--report", "--n", "40", "--repeats", "1", "--batch-sizes",
                                 "2", "--temperatures", "1.0", "--out", str(root / "RESULTS.md")))
    report = json.loads(evaluated.stdout.strip().splitlines()[-1])
    return root, args, report


def test_fashion_checkpoints_and_results_go_to_the_datasets_folders(fashion):
    root, _, _ = fashion
    for name in ("vqvae", "gpt", "classifier"):
        ckpt = torch.load(root / "ck" / "fashion_mnist" / f"{name}.pt", weights_only=True)
        assert ckpt["dataset"] == "fashion_mnist"
    assert (root / "res" / "fashion_mnist" / "transformer" / "samples_epoch001.png").is_file()
    assert not (root / "ck" / "vqvae.pt").exists() and not (root / "res" / "transformer").exists()


def test_fashion_sample_grid_has_a_row_per_class_and_a_name_margin(fashion):
    root, _, _ = fashion
    mode, (width, height), pixels = png(root / "res" / "fashion_mnist" / "transformer" / "samples_epoch001.png")
    assert height == 10 * 30 + 2  # ten classes, 28 px tiles, 2 px padding
    assert width > grid_width(2, 28) + 40  # the class names ("T-shirt/top", "Ankle boot") need a wide margin
    assert pixels.std() > 10


def test_fashion_samples_and_evaluation(fashion):
    root, _, report = fashion
    with np.load(root / "samples.npz") as f:
        assert f["images"].shape == (20, 1, 28, 28) and f["images"].std() > 2  # not blank
    rows = report["rows"]
    assert set(rows) == {"real train (floor)", "VQ-VAE recon of test (ceiling)", "samples (T=0.9)"}
    assert all(np.isfinite(r["fid"]) and 0 <= r["accuracy"] <= 1 for r in rows.values())
    assert len(rows["samples (T=0.9)"]["class_histogram"]) == 10


def test_fashion_report_is_its_own_section_beside_the_others(fashion):
    root, _, _ = fashion
    text = (root / "RESULTS.md").read_text()
    assert "<!-- mnist -->\n## MNIST\nkept as it was\n<!-- /mnist -->" in text
    section = text[text.index("<!-- fashion_mnist -->"):text.index("<!-- /fashion_mnist -->")]
    assert "Fashion-MNIST" in section and "GPT (raster)" in section
    gpt = settings.build_config("tiny").gpt  # each prior's quality row says the temperature and guidance it drew at
    assert f"| **GPT (raster)**, T={gpt.temperature:g}, g={gpt.guidance:g} |" in section
    plot = "_writeup_images/fashion_mnist/temperature_sweep.png"
    assert (root / plot).is_file() and f"]({plot})" in section  # beside the report, linked relative to it


def test_a_checkpoint_of_one_dataset_draws_on_its_own_and_is_refused_on_another(fashion, tmp_path):
    """A prior found by path draws on the dataset it was trained on, whatever the command's preset; a data.dataset
    the user gives that contradicts it is refused with the flags that would work."""
    root, _, _ = fashion
    ck = root / "ck" / "fashion_mnist"
    mnist_dirs = ["--set", f"checkpoint_dir={root / 'ck'}", "--set", f"results_dir={root / 'res'}", "--set", "run="]
    drawn = run_in_process("generator.py", *mnist_dirs, "--prior", str(ck / "gpt.pt"), "--n", "10",
                           "--save", str(tmp_path / "s.npz"))
    assert "drawing with its dataset and settings" in drawn.stdout and (tmp_path / "s.npz").is_file()
    assert_one_line_error(run_in_process("generator.py", *mnist_dirs, "--set", "data.dataset=mnist",
                                         "--prior", str(ck / "gpt.pt"), check=False),
                          "fashion_mnist", "--preset tiny --set data.dataset=fashion_mnist")
    assert_one_line_error(run_in_process("transformer_train.py", *mnist_dirs, "--vqvae", str(ck / "vqvae.pt"),
                                         check=False), "fashion_mnist")
    assert not (root / "ck" / "gpt.pt").exists()


# --- CIFAR-10: colour, from an archive in its own format ------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """The three scripts on a synthetic CIFAR-10 archive, run in this process so that the batches' own MD5s stand in
    for CIFAR-10's (each batch is still checked, once, as a real one is)."""
    root = tmp_path_factory.mktemp("cifar")
    _, md5 = write_cifar_archive(str(root / "data"))
    args = ["--set", f"checkpoint_dir={root / 'ck'}", "--set", f"results_dir={root / 'res'}", "--set", "run=",
            "--set", f"data.root={root / 'data'}", "--set", "data.dataset=cifar10"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetch, "CIFAR_BATCH_MD5", md5)
        run_in_process("vqvae_train.py", *args)
        run_in_process("transformer_train.py", *args)
        run_in_process("generator.py", *args, "--n", "20", "--save", str(root / "samples.npz"))
    return root, args


def colourful(pixels_HWC):
    """Not grey: the three channels differ somewhere."""
    return np.abs(pixels_HWC[..., 0] - pixels_HWC[..., 1]).max() > 20


def test_cifar_tokenizer_reconstructions_are_in_colour(cifar):
    root, _ = cifar
    mode, size, pixels = png(root / "res" / "cifar10" / "vqvae" / "recon_epoch001.png")
    assert mode == "RGB" and size == (grid_width(8, 32), 2 * 34 + 2) and colourful(pixels)


def test_cifar_prior_samples_in_colour(cifar):
    root, _ = cifar
    ckpt = torch.load(root / "ck" / "cifar10" / "gpt.pt", weights_only=True)
    assert ckpt["dataset"] == "cifar10"
    mode, (width, height), pixels = png(root / "res" / "cifar10" / "transformer" / "samples_epoch001.png")
    assert mode == "RGB" and height == 10 * 34 + 2 and width > grid_width(2, 32)
    with np.load(root / "samples.npz") as f:
        images = f["images"]
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8
    assert (images[:, 0] != images[:, 1]).any()  # three channels of their own (one epoch on noise: faint colour)


def test_cifar_reads_its_archive_once_into_the_batches_folder(cifar):
    root, _ = cifar
    assert os.path.isdir(root / "data" / fetch.CIFAR_FOLDER)
    assert not [f for f in os.listdir(root / "data") if "tmp" in f]
