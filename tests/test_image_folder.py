"""A folder of images as a dataset (image_folder.py, datasets.folder_dataset): the layouts, every kind of file a
user's folder holds, the fixed split, the decoded-image cache, and the one-line errors for bad folders."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import cli, data, datasets, image_folder, settings
from pipeline.errors import ConfigError, DataError


def save(path, array, mode=None, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode).save(path, **options) if mode else Image.fromarray(array).save(path, **options)
    return path


def solid(size, colour):
    return np.full((size, size, len(colour)), colour, dtype=np.uint8)


@pytest.fixture
def two_classes(tmp_path):
    """12 cats (red) and 12 dogs (blue), 16x16 PNGs, plus a README and a hidden file that are not images."""
    root = tmp_path / "pets"
    for i in range(12):
        save(str(root / "cat" / f"{i:02d}.png"), solid(16, (200, 0, 0)))
        save(str(root / "dog" / f"{i:02d}.png"), solid(16, (0, 0, 200)))
    (root / "README.txt").write_text("not an image")  # would make the folder "mixed" if it were read
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1")
    return str(root)


def folder_cfg(folder, root, **fields):
    assignments = ["data.dataset=folder", f"data.folder={folder}", f"data.root={root}", "data.image_size=16", "run=",
                   *[f"data.{k}={v}" for k, v in fields.items()]]
    return settings.build_config("tiny", assignments)


# --- layouts ---------------------------------------------------------------------------------------------------------

def test_class_subfolders_are_the_classes_and_non_images_are_ignored(two_classes):
    names, files = image_folder.scan(two_classes)
    assert names == ("cat", "dog") and len(files) == 24
    assert files[0] == (os.path.join("cat", "00.png"), 0) and files[-1] == (os.path.join("dog", "11.png"), 1)


def test_images_without_subfolders_are_one_class(tmp_path):
    for i in range(10):
        save(str(tmp_path / "flat" / f"{i}.png"), solid(8, (i, i, i)))
    names, files = image_folder.scan(str(tmp_path / "flat"))
    assert names == ("flat",) and {label for _, label in files} == {0}


def test_the_config_follows_the_folder(two_classes, tmp_path):
    cfg = folder_cfg(two_classes, tmp_path)
    assert cfg.gpt.num_classes == 2 and cfg.vqvae.image_channels == 3 and cfg.vqvae.image_size == 16
    assert cfg.vqvae.grid_size == 4  # a token per 4x4 pixels
    assert cfg.checkpoint_dir == os.path.join("checkpoints", "folder", "pets")
    assert settings.build_config("folder", [f"data.folder={two_classes}"]).vqvae.grid_size == 8  # 32x32 images
    assert settings.build_config("folder", [f"data.folder={two_classes}", "data.image_size=64"]).vqvae.grid_size == 8
    assert settings.build_config("folder", [f"data.folder={two_classes}", "data.image_size=28"]).vqvae.grid_size == 7
    assert settings.build_config("folder", [f"data.folder={two_classes}", "data.image_size=48"]).vqvae.grid_size == 6
    spec = datasets.spec_of(cfg.data)
    assert spec.class_names == ("cat", "dog") and spec.key.startswith("folder:pets:")
    # the tokenizer's first line: what the folder was read as, so a class too many shows before training
    assert spec.in_words(18, 2) == "pets: 18 training and 2 validation images, 2 classes (cat, dog)"


@pytest.mark.parametrize("assignment", ["data.folder=/tmp", "data.image_size=64", "data.channels=1",
                                        "data.background=black"])
def test_folder_fields_are_refused_for_a_built_in_dataset(assignment):
    with pytest.raises(ConfigError, match="only with data.dataset=folder"):
        settings.build_config("tiny", [assignment])


@pytest.mark.parametrize("assignment, message", [("data.image_size=30", "data.image_size must be a multiple of 4"),
                                                 ("data.channels=2", "data.channels must be 3")])
def test_bad_folder_settings_are_one_line(two_classes, assignment, message):
    with pytest.raises(ConfigError, match=message):
        settings.build_config("tiny", ["data.dataset=folder", f"data.folder={two_classes}", assignment])


# --- bad folders: each one line that says what to do -------------------------------------------------------------------

def test_a_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; give a folder of images"):
        settings.build_config("tiny", ["data.dataset=folder", f"data.folder={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="needs the folder: --set data.folder=PATH"):
        settings.build_config("tiny", ["data.dataset=folder"])


def test_a_file_instead_of_a_folder(tmp_path):
    path = save(str(tmp_path / "one.png"), solid(8, (1, 2, 3)))
    with pytest.raises(DataError, match="is a file, not a folder"):
        image_folder.scan(path)


def test_an_empty_folder_and_a_folder_with_one_image(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="holds 0 images Pillow can read; a dataset needs at least 10"):
        image_folder.scan(str(tmp_path / "empty"))
    save(str(tmp_path / "single" / "a.png"), solid(8, (1, 2, 3)))
    with pytest.raises(DataError, match="holds 1 image Pillow"):
        image_folder.scan(str(tmp_path / "single"))


def test_a_class_folder_without_images(two_classes):
    os.makedirs(os.path.join(two_classes, "bird"))
    with open(os.path.join(two_classes, "bird", "notes.txt"), "w") as f:
        f.write("no pictures yet")
    with pytest.raises(DataError, match=r"class folder .*bird holds no images; skipped 1 \.txt file .*; add some "
                                        r"or remove it"):
        image_folder.scan(two_classes)


def test_a_folder_of_a_kind_pillow_cannot_open_says_what_it_skipped(tmp_path):
    """iPhone photos (HEIC) without a plugin: "0 images" alone sends the user looking in the wrong place."""
    for i in range(14):
        (tmp_path / "phone" / "cats").mkdir(parents=True, exist_ok=True)
        (tmp_path / "phone" / "cats" / f"IMG_{i:04d}.HEIC").write_bytes(b"ftypheic")
    (tmp_path / "phone" / "cats" / "IMG_0100.MOV").write_bytes(b"\0")
    with pytest.raises(DataError, match=r"holds no images; skipped 14 \.heic files, 1 \.mov file \(kinds Pillow "
                                        r"cannot open: convert them to PNG or JPEG\)"):
        image_folder.scan(str(tmp_path / "phone"))
    os.rename(tmp_path / "phone" / "cats", tmp_path / "flat")
    with pytest.raises(DataError, match=r"holds 0 images Pillow can read; skipped 14 \.heic files"):
        image_folder.scan(str(tmp_path / "flat"))


def test_a_class_with_no_training_image_is_refused_by_name(tmp_path):
    """Nine cats, then one owl: the tenth file is validation, so the owl class would train on nothing."""
    for i in range(9):
        save(str(tmp_path / "zoo" / "cat" / f"{i}.png"), solid(8, (200, 0, 0)))
    save(str(tmp_path / "zoo" / "owl" / "0.png"), solid(8, (0, 0, 200)))
    with pytest.raises(DataError, match=r"class folder .*owl has no training image .*; add images to it or remove it"):
        image_folder.scan(str(tmp_path / "zoo"))
    save(str(tmp_path / "zoo" / "owl" / "1.png"), solid(8, (0, 0, 200)))
    assert image_folder.scan(str(tmp_path / "zoo"))[0] == ("cat", "owl")


def test_images_beside_class_folders(two_classes):
    save(os.path.join(two_classes, "stray.png"), solid(8, (1, 2, 3)))
    with pytest.raises(DataError, match="both images .* and class subfolders"):
        image_folder.scan(two_classes)


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_a_damaged_image_stops_the_run_and_is_named(two_classes, tmp_path, damage):
    path = os.path.join(two_classes, "dog", "05.png")
    if damage == "truncated":
        whole = open(path, "rb").read()
        open(path, "wb").write(whole[:len(whole) // 2])
    else:
        open(path, "wb").write(b"GIF89a but nothing else")
    with pytest.raises(DataError) as info:
        image_folder.decoded(two_classes, str(tmp_path / "cache"), 16, 3, "white")
    message = str(info.value)
    assert path in message and "remove or replace the file" in message and len(message.splitlines()) == 1
    assert not os.path.exists(tmp_path / "cache") or not os.listdir(tmp_path / "cache")  # nothing half-written


def test_every_damaged_image_is_named_in_one_line_up_to_a_few(two_classes, tmp_path):
    """Five bad files: the first three named, the rest counted; one line, one pass to fix them all."""
    bad = [os.path.join(two_classes, "dog", f"{i:02d}.png") for i in range(5)]
    for path in bad:
        open(path, "wb").write(b"GIF89a but nothing else")
    with pytest.raises(DataError) as info:
        image_folder.decoded(two_classes, str(tmp_path / "cache"), 16, 3, "white")
    message = str(info.value)
    assert message.startswith("cannot read 5 files: ") and "and 2 more" in message and len(message.splitlines()) == 1
    assert all(path in message for path in bad[:3]) and bad[3] not in message


# --- every kind of file --------------------------------------------------------------------------------------------

def decode_one(tmp_path, name, array, mode=None, size=16, channels=3, background="white", **options):
    path = save(str(tmp_path / name), array, mode, **options)
    return image_folder.decode(path, size, channels, image_folder.background_rgb(background))


def test_transparency_is_composited_over_the_background(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:8, :, :] = (255, 0, 0, 255)  # opaque red top half, fully transparent bottom half
    out = decode_one(tmp_path, "a.png", rgba, "RGBA")
    assert out.shape == (3, 16, 16) and tuple(out[:, 0, 0]) == (255, 0, 0) and tuple(out[:, 15, 0]) == (255, 255, 255)
    black = decode_one(tmp_path, "b.png", rgba, "RGBA", background="#000000")
    assert tuple(black[:, 15, 0]) == (0, 0, 0)
    half = rgba.copy()
    half[:, :, 3] = 128  # half-transparent red over white: pink
    pink = decode_one(tmp_path, "c.png", half, "RGBA")
    assert 250 <= pink[0, 0, 0] and 120 <= pink[1, 0, 0] <= 135


def test_a_palette_image_with_a_transparent_colour(tmp_path):
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.paste(0, (0, 0, 16, 8))
    path = str(tmp_path / "p.png")
    image.save(path, transparency=0)  # palette index 0 is transparent
    out = image_folder.decode(path, 16, 3, (255, 255, 255))
    assert tuple(out[:, 0, 0]) == (255, 255, 255) and tuple(out[:, 15, 0]) == (0, 200, 0)


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535 step 257
    path = str(tmp_path / "deep.png")
    Image.fromarray(ramp).save(path)  # a uint16 array: a 16-bit grey PNG
    assert Image.open(path).mode.startswith("I")
    out = image_folder.decode(path, 16, 1, (255, 255, 255))
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8
    assert np.array_equal(out[0], np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_a_cmyk_jpeg_and_an_animated_gif(tmp_path):
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red in CMYK
    cmyk.save(str(tmp_path / "c.jpg"), quality=95)
    out = image_folder.decode(str(tmp_path / "c.jpg"), 16, 3, (255, 255, 255))
    assert out[0].mean() > 200 and out[1].mean() < 60 and out[2].mean() < 60
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((0, 200, 0), (200, 0, 0))]
    frames[0].save(str(tmp_path / "anim.gif"), save_all=True, append_images=frames[1:], duration=100)
    out = image_folder.decode(str(tmp_path / "anim.gif"), 16, 3, (255, 255, 255))
    assert out[1].mean() > 150 and out[0].mean() < 50  # the first frame


def test_small_and_oblong_images_are_centre_cropped_and_resized(tmp_path):
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, 10:20] = 255  # the centre third is white: after the centre crop the whole square is white
    out = decode_one(tmp_path, "wide.png", wide, size=32)
    assert out.shape == (3, 32, 32) and out.min() >= 250
    grey = decode_one(tmp_path, "tiny.png", solid(4, (90, 90, 90)), size=16, channels=1)
    assert grey.shape == (1, 16, 16) and abs(int(grey.mean()) - 90) <= 1


# --- split and cache --------------------------------------------------------------------------------------------------

def test_every_tenth_file_is_validation_and_the_cache_is_built_once(two_classes, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    images, labels, test = image_folder.decoded(two_classes, cache, 16, 3, "white")
    assert images.shape == (24, 3, 16, 16) and images.dtype == torch.uint8 and int(test.sum()) == 2
    _, files = image_folder.scan(two_classes)
    names = sorted(files)  # the 10th and 20th in sorted order: cat/09.png and dog/07.png
    assert {names[9][1], names[19][1]} == {0, 1}
    red = images[:, 0, 0, 0] > 100
    assert torch.equal(red, labels == 0)  # labels stay with their images through the storage order
    calls = []
    monkeypatch.setattr(image_folder, "decode", lambda *a: calls.append(a))
    again = image_folder.decoded(two_classes, cache, 16, 3, "white")
    assert calls == [] and all(torch.equal(a, b) for a, b in zip(again, (images, labels, test)))
    assert len(os.listdir(cache)) == 1


def test_a_changed_folder_is_decoded_again_and_its_old_cache_removed(two_classes, tmp_path):
    cache = str(tmp_path / "cache")
    image_folder.decoded(two_classes, cache, 16, 3, "white")
    first = os.listdir(cache)
    save(os.path.join(two_classes, "cat", "03.png"), solid(16, (0, 250, 0)))  # same name, new pixels
    os.utime(os.path.join(two_classes, "cat", "03.png"), ns=(1, 1))
    images, labels, _ = image_folder.decoded(two_classes, cache, 16, 3, "white")
    assert os.listdir(cache) != first and len(os.listdir(cache)) == 1
    assert (images[:, 1, 0, 0] > 200).sum() == 1  # the green cat is in


def test_a_file_rewritten_in_place_with_its_size_and_time_put_back_is_decoded_again(two_classes, tmp_path):
    """Same name, same size (a BMP's size follows its dimensions), its old modification time restored: only the
    change time tells, and it does."""
    cache = str(tmp_path / "cache")
    for i in range(12):  # BMPs: an edit keeps the file's size to the byte
        Image.fromarray(solid(16, (200, 0, 0))).save(os.path.join(two_classes, "cat", f"{i:02d}.bmp"))
    before, _, _ = image_folder.decoded(two_classes, cache, 16, 3, "white")
    victim = os.path.join(two_classes, "cat", "05.bmp")
    stat = os.stat(victim)
    Image.fromarray(solid(16, (0, 250, 0))).save(victim)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(victim).st_size == stat.st_size and os.stat(victim).st_mtime_ns == stat.st_mtime_ns
    after, _, _ = image_folder.decoded(two_classes, cache, 16, 3, "white")
    assert (before[:, 1, 0, 0] > 200).sum() == 0 and (after[:, 1, 0, 0] > 200).sum() == 1


def test_a_cache_whose_pixels_changed_on_disk_is_not_trusted(two_classes, tmp_path):
    cache = str(tmp_path / "cache")
    images, labels, test = image_folder.decoded(two_classes, cache, 16, 3, "white")
    path = os.path.join(cache, os.listdir(cache)[0])
    stored = torch.load(path, weights_only=True)
    stored["images"][0] = 0  # a damaged cache that still loads, under the right key
    torch.save(stored, path)
    again = image_folder.decoded(two_classes, cache, 16, 3, "white")
    assert all(torch.equal(a, b) for a, b in zip(again, (images, labels, test)))


def test_a_folder_given_as_dot_or_dot_dot_is_named_as_the_folder_it_is(two_classes, tmp_path, monkeypatch):
    """`data.folder=..` wrote into MNIST's own checkpoints/ (folder/.. = .) and every `.` shared one slot."""
    monkeypatch.chdir(os.path.join(two_classes, "cat"))
    up = folder_cfg("..", tmp_path)
    monkeypatch.chdir(two_classes)
    here = folder_cfg(".", tmp_path)
    assert up.checkpoint_dir == here.checkpoint_dir == os.path.join("checkpoints", "folder", "pets")


def test_the_key_of_a_folder_changes_with_its_contents_and_settings(two_classes):
    _, files = image_folder.scan(two_classes)
    key = image_folder.content_key(two_classes, files, (16, 3, (255, 255, 255)))
    assert key == image_folder.content_key(two_classes, files, (16, 3, (255, 255, 255)))
    assert key != image_folder.content_key(two_classes, files, (32, 3, (255, 255, 255)))
    os.utime(os.path.join(two_classes, "dog", "00.png"), ns=(5, 5))
    assert key != image_folder.content_key(two_classes, files, (16, 3, (255, 255, 255)))


def test_load_split_and_class_proportions_through_the_config(two_classes, tmp_path):
    for i in range(12, 18):  # 18 cats, 12 dogs
        save(os.path.join(two_classes, "cat", f"{i:02d}.png"), solid(16, (200, 0, 0)))
    cfg = folder_cfg(two_classes, tmp_path)
    train, _ = data.load_split(cfg.data, train=True)
    test, _ = data.load_split(cfg.data, train=False)
    assert len(train) == 27 and len(test) == 3 and train.shape[1:] == (3, 16, 16)
    shares = data.class_proportions(cfg.data)
    assert shares.sum().item() == pytest.approx(1.0) and shares[0] > shares[1]
    assert os.path.isdir(os.path.join(str(tmp_path), datasets.FOLDER_CACHE))


def test_the_documented_tilde_path_finds_the_folder(two_classes, monkeypatch):
    """`--set data.folder=~/pictures/pets`: the shell leaves the ~ alone inside a --set value; the config expands it,
    and $VARIABLES too, in every path field."""
    home, name = os.path.split(two_classes)
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("RUNS", "runs")
    cfg = settings.build_config("tiny", ["data.dataset=folder", f"data.folder=~/{name}", "checkpoint_dir=$HOME/$RUNS",
                                         "results_dir=~/res", "data.root=~/data"])
    assert cfg.data.folder == two_classes and cfg.data.root == os.path.join(home, "data")
    assert cfg.checkpoint_dir.startswith(os.path.join(home, "runs")) and cfg.results_dir.startswith(os.path.join(home, "res"))
    assert cli.user_path("~/s.npz") == os.path.join(home, "s.npz")  # --save, --out, --vqvae, ... the same way


# --- what a hostile folder held (each of these trained on wrong pixels or ended in a traceback before) --------------

def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, :8] = (255, 0, 0)  # stored: red left half, blue right half
    pixels[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180" as a phone writes it: shown with blue on the left
    out = decode_one(tmp_path, "phone.png", pixels, exif=exif)
    assert tuple(out[:, 8, 0]) == (0, 0, 255) and tuple(out[:, 8, 15]) == (255, 0, 0)


def test_a_dark_sixteen_bit_image_stays_dark(tmp_path):
    dark = np.full((16, 16), 200, dtype=np.uint16)  # 200 of 65535: nearly black
    path = str(tmp_path / "dark.png")
    Image.fromarray(dark).save(path)
    assert image_folder.decode(path, 16, 1, (255, 255, 255)).max() == 1  # 200 / 257, not 200


def test_nas_thumbnail_folders_are_not_data(two_classes):
    for where in ("cat/@eaDir/00.png", "@eaDir/cat/00.png", "dog/#recycle/old.png"):
        save(os.path.join(two_classes, where), solid(16, (0, 200, 0)))
    names, files = image_folder.scan(two_classes)
    assert names == ("cat", "dog") and len(files) == 24 and not any("@" in p or "#" in p for p, _ in files)


def test_a_dangling_link_is_named_in_one_line(two_classes):
    os.symlink("/nowhere/gone.png", os.path.join(two_classes, "cat", "link.png"))
    with pytest.raises(DataError, match="link.png is a link to a file that does not exist"):
        image_folder.scan(two_classes)


@pytest.mark.parametrize("size", [3, 0, -4])
def test_a_tiny_image_size_is_a_config_error_not_a_traceback(two_classes, tmp_path, size):
    with pytest.raises(ConfigError, match="data.image_size must be a multiple of 4"):
        folder_cfg(two_classes, tmp_path, image_size=size)
