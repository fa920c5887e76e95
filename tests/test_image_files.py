"""What evaluate.py scores besides generator.py's npz: an npz without labels, a .npy array (channels first, channels
last or grey), a folder of PNGs; and the shipped classifier weights, checked against their SHA-256."""
import os
import shutil

import numpy as np
import pytest
import torch
from pipeline import metrics, settings
from PIL import Image


from pipeline.errors import CheckpointError, SampleFileError
from pipeline.image_files import read_images

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def images(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_an_npz_without_labels_reads_as_unconditional(tmp_path):
    np.savez(tmp_path / "a.npz", images=images(6, MNIST))
    x, labels = read_images(str(tmp_path / "a.npz"), MNIST, 10)
    assert x.shape == (6, 1, 28, 28) and labels.tolist() == [-1] * 6


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_a_npy_array_in_any_common_layout(tmp_path, layout):
    x = images(5, MNIST)
    stored = {"NCHW": x, "NHWC": x.transpose(0, 2, 3, 1), "NHW": x[:, 0]}[layout]
    np.save(tmp_path / "a.npy", stored)
    read, labels = read_images(str(tmp_path / "a.npy"), MNIST, 10)
    assert np.array_equal(read.numpy(), x) and (labels == -1).all()


def test_rgb_channels_last_becomes_channels_first(tmp_path):
    x = images(4, CIFAR)
    np.save(tmp_path / "c.npy", x.transpose(0, 2, 3, 1))
    assert np.array_equal(read_images(str(tmp_path / "c.npy"), CIFAR, 10)[0].numpy(), x)


def test_a_folder_of_pngs_in_name_order(tmp_path):
    x = images(5, MNIST)
    for i, pixels in enumerate(x):
        Image.fromarray(pixels[0]).save(tmp_path / f"img{i:02d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    read, labels = read_images(str(tmp_path), MNIST, 10)
    assert np.array_equal(read.numpy(), x) and (labels == -1).all()


def test_rgb_pngs_are_read_as_grey_for_a_grey_dataset(tmp_path):
    for i in range(4):
        Image.new("RGB", (28, 28), (200, 200, 200)).save(tmp_path / f"{i}.png")
    read, _ = read_images(str(tmp_path), MNIST, 10)
    assert read.shape == (4, 1, 28, 28) and int(read[0, 0, 0, 0]) == 200


BAD = {
    "an empty folder": (lambda p: p.mkdir(), "no .png files"),
    "a PNG of the wrong size": (lambda p: (p.mkdir(), Image.new("L", (32, 32)).save(p / "a.png")), "32x32 pixels"),
    "a broken PNG": (lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"not a png")), "not a readable PNG"),
    "float pixels": (lambda p: np.save(f"{p}.npy", images(5, MNIST).astype(np.float32)), "uint8"),
    "a wrong shape": (lambda p: np.save(f"{p}.npy", images(5, (2, 28, 28))), "N x 1 x 28 x 28"),
    "too few images": (lambda p: np.save(f"{p}.npy", images(3, MNIST)), "at least 4"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_files_are_one_line(tmp_path, case):
    make, expected = BAD[case]
    path = tmp_path / "x"
    make(path)
    target = f"{path}.npy" if os.path.exists(f"{path}.npy") else str(path)
    with pytest.raises(SampleFileError, match=expected) as info:
        read_images(target, MNIST, 10)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dataset", sorted(metrics.SHIPPED_SHA256))
def test_the_shipped_classifiers_are_in_the_repo_and_match_their_checksums(dataset):
    path = metrics.shipped_path(dataset)
    assert os.path.isfile(path), f"{path} is missing"
    model = metrics.load_classifier(path, torch.device("cpu"), dataset)  # verifies the SHA-256 first
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_changed_shipped_classifier_is_refused_with_one_line(tmp_path, monkeypatch):
    shutil.copyfile(metrics.shipped_path("mnist"), tmp_path / "mnist.pt")
    monkeypatch.setattr(metrics, "EVALUATOR_DIR", str(tmp_path))  # the copy now stands where the shipped one is
    metrics.load_classifier(str(tmp_path / "mnist.pt"), torch.device("cpu"), "mnist")  # unchanged: fine
    with open(tmp_path / "mnist.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(CheckpointError, match="does not match its recorded SHA-256.*git checkout"):
        metrics.load_classifier(str(tmp_path / "mnist.pt"), torch.device("cpu"), "mnist")


def test_scoring_uses_the_shipped_classifier_by_default(tiny_cfg):
    assert metrics.classifier_path(tiny_cfg) == metrics.shipped_path("mnist")
    assert metrics.classifier_path(tiny_cfg, "mine.pt") == "mine.pt"


def test_evaluate_scores_a_png_folder_without_labels(tmp_path):
    """Real test digits written as PNGs score close to the test set itself, with no accuracy (no labels)."""
    import json
    from pipeline import data
    from test_end_to_end import run
    test_images, _ = data.load_split(settings.build_config("tiny").data, train=False)
    for i, pixels in enumerate(test_images[:64].numpy()):
        Image.fromarray(pixels[0]).save(tmp_path / f"{i:03d}.png")
    result = run("evaluate.py", str(tmp_path), "--no-reference", "--json")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    (row,) = report["rows"].values()
    assert row["n"] == 64 and row["accuracy"] is None
    assert report["classifier"] == os.path.join("evaluator", "mnist.pt")
