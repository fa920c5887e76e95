"""A user's own folder of images through every script on the `tiny` preset: a few dozen generated files of mixed
modes, sizes and formats in two class subfolders (plus a file that is not an image), trained into a tokenizer and
the three priors, drawn, scored and benchmarked; and a folder changed between the tokenizer and the prior refused.

One torch thread per process (see test_end_to_end.py); every output goes under tmp_path.
"""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from script_runs import assert_one_line_error, finish, run, run_in_process, start
from test_end_to_end import grid_size_px

SIZE = 16  # data.image_size: a 4x4 token grid


def draw(kind, colour, size, mode):
    """A filled disc or square of one colour on a dark ground."""
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    inside = ((yy - centre) ** 2 + (xx - centre) ** 2 <= (size / 3) ** 2) if kind == "disc" else \
        ((abs(yy - centre) <= size / 3) & (abs(xx - centre) <= size / 3))
    rgb = np.zeros((size, size, 3), dtype=np.uint8) + 20
    rgb[inside] = colour
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = np.where(inside, 255, 0).astype(np.uint8)
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return image.convert(mode)


def make_folder(root):
    """discs/ (warm colours) and squares/ (cool colours): PNG, JPEG, GIF; RGB, RGBA, grey, palette, 16-bit, CMYK;
    16 to 40 pixels wide; and a notes.txt that is ignored."""
    formats = [("RGB", "png"), ("RGBA", "png"), ("L", "jpg"), ("P", "gif"), ("I;16", "png"), ("CMYK", "jpg")]
    for kind, colour in (("disc", (230, 120, 30)), ("square", (40, 90, 230))):
        folder = os.path.join(root, f"{kind}s")
        os.makedirs(folder)
        for i in range(24):
            mode, ext = formats[i % len(formats)]
            draw(kind, colour, 16 + 4 * (i % 7), mode).save(os.path.join(folder, f"{i:02d}.{ext}"))
    with open(os.path.join(root, "discs", "notes.txt"), "w") as f:
        f.write("not an image")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_e2e")
    images = make_folder(str(root / "shapes"))
    dirs = ["--set", f"checkpoint_dir={root / 'ck'}", "--set", f"results_dir={root / 'res'}", "--set", "run="]
    args = [*dirs, "--set", "data.dataset=folder", "--set", f"data.folder={images}", "--set", f"data.image_size={SIZE}",
            "--set", f"data.root={root / 'data'}"]
    run("vqvae_train.py", *args)  # first alone: it also decodes the folder into the image cache
    finish(start("transformer_train.py", *args), start("transformer_train.py", *args, "--prior", "diffusion"))
    finish(start("vqvae_train.py", *args, preset="tiny_var"), start("evaluate.py", *args, "--train-classifier"))
    finish(start("transformer_train.py", *args, "--prior", "var", preset="tiny_var"), start("generator.py", *args),
           start("generator.py", *args, "--n", "30", "--save", str(root / "samples.npz")))
    evaluated, _ = finish(start("evaluate.py", *args, "--prior", "diffusion", "--n", "12", "--json"),
                          start("benchmark.py", *args, "--report", "--n", "12", "--repeats", "1", "--batch-sizes", "2",
                                "--temperatures", "1.0", "--steps", "2", "--out", str(root / "RESULTS.md")))
    return root, args, images, json.loads(evaluated.stdout.splitlines()[-1])


def test_the_folder_trains_every_prior_into_its_own_checkpoint_folder(folder_run):
    root, _, _, _ = folder_run
    ck = root / "ck" / "folder" / "shapes"
    for name in ("vqvae", "vqvae_multiscale", "gpt", "diffusion", "var", "classifier"):
        ckpt = torch.load(ck / f"{name}.pt", weights_only=True)
        assert ckpt["dataset"] in ("folder", ) or ckpt["dataset"].startswith("folder:shapes:")
    vqvae = torch.load(ck / "vqvae.pt", weights_only=True)
    assert vqvae["config"]["image_size"] == SIZE and vqvae["config"]["image_channels"] == 3
    assert vqvae["config"]["grid_size"] == 4 and vqvae["data_key"].startswith("folder:shapes:")
    gpt = torch.load(ck / "gpt.pt", weights_only=True)
    assert gpt["config"]["num_classes"] == 2 and gpt["data_key"] == vqvae["data_key"]


def test_grids_have_a_row_per_class_folder_named_in_the_margin(folder_run):
    root, _, _, _ = folder_run
    grid = root / "res" / "folder" / "shapes" / "generator" / "temperature_1.00.png"
    with Image.open(grid) as image:
        assert image.mode == "RGB"
        width, height = grid_size_px(2, 2, tile=SIZE)  # 2 classes x sample.per_class=2 of the tiny preset
        assert image.size[1] == height and width + 10 < image.size[0] < width + 120
        margin = np.asarray(image)[:, :20]
    assert (margin < 128).any()  # the class names are written in the margin ("discs", "squares")


def test_saved_samples_follow_the_class_shares_and_are_scored(folder_run):
    root, _, _, report = folder_run
    saved = np.load(root / "samples.npz")
    assert saved["images"].shape == (30, 3, SIZE, SIZE) and saved["images"].dtype == np.uint8
    assert np.bincount(saved["labels"]).tolist() == [15, 15]  # the two classes hold equal shares here
    rows = report["rows"]
    assert {"real train (floor)", "VQ-VAE recon of test (ceiling)"} <= set(rows)
    sampled = [row for name, row in rows.items() if name.startswith("samples")][0]
    assert sampled["n"] == 12 and np.isfinite(sampled["fid"]) and sampled["accuracy"] is not None
    assert "folder" in report["classifier"]


def test_the_benchmark_report_has_the_folders_section(folder_run):
    root, _, _, _ = folder_run
    text = (root / "RESULTS.md").read_text()
    assert "<!-- folder -->" in text and "## shapes" in text
    for label in ("GPT", "VAR", "diffusion"):
        assert label in text


def test_the_image_cache_is_made_once(folder_run):
    root, _, _, _ = folder_run
    assert len(os.listdir(root / "data" / "image_cache")) == 1


def test_a_folder_changed_after_the_tokenizer_is_refused_by_the_prior(folder_run, tmp_path):
    root, args, images, _ = folder_run
    changed = tmp_path / "shapes"
    shutil.copytree(images, changed)
    ck = tmp_path / "ck"
    shutil.copytree(root / "ck", ck)
    draw("disc", (0, 200, 0), 20, "RGB").save(changed / "discs" / "new.png")
    moved = [a.replace(str(images), str(changed)).replace(str(root / "ck"), str(ck)) for a in args]
    result = run_in_process("transformer_train.py", *moved, "--overwrite", check=False)
    assert_one_line_error(result, "has changed since", "train the tokenizer again")


def test_a_run_that_fails_leaves_no_empty_folders_behind(tmp_path):
    images = tmp_path / "pets"
    os.makedirs(images / "cats")
    for i in range(12):
        (images / "cats" / f"{i}.png").write_bytes(b"GIF89a but nothing else")
    result = run_in_process("vqvae_train.py", "--set", f"checkpoint_dir={tmp_path / 'runs' / 'ck'}",
                            "--set", f"results_dir={tmp_path / 'runs' / 'res'}", "--set", "data.dataset=folder",
                            "--set", f"data.folder={images}", "--set", f"data.root={tmp_path / 'data'}", check=False)
    assert "cannot read 12 files" in result.stderr
    assert not (tmp_path / "runs").exists()  # its checkpoint and results folders were made, then taken away


def test_a_bad_folder_is_one_line_in_every_script(tmp_path):
    os.makedirs(tmp_path / "empty" / "cats")
    for script in ("vqvae_train.py", "generator.py", "evaluate.py"):
        result = run_in_process(script, "--set", "data.dataset=folder", "--set", f"data.folder={tmp_path / 'empty'}",
                                check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "holds no images; add some or remove it" in result.stderr


def test_an_unlabelled_folder_is_scored_without_class_accuracy(tmp_path):
    """Images and no subfolders: one class. The evaluator learns quarter turns instead of classes, and the report
    has FID and precision/recall but no accuracy."""
    flat = tmp_path / "flat"
    os.makedirs(flat)
    for i in range(30):  # 3 validation images: fewer than precision/recall's 3 neighbours need, so they use 2
        draw("disc" if i % 2 else "square", (200, 40 + 5 * i, 30), 16, "RGB").save(flat / f"{i:02d}.png")
    args = ["--set", f"checkpoint_dir={tmp_path / 'ck'}", "--set", "run=", "--set", "data.dataset=folder", "--set", f"data.folder={flat}",
            "--set", f"data.image_size={SIZE}", "--set", f"data.root={tmp_path / 'data'}"]
    trained = run_in_process("evaluate.py", *args, "--train-classifier")
    assert "(quarter turns)" in trained.stdout
    images = np.stack([np.asarray(Image.open(flat / f"{i:02d}.png")).transpose(2, 0, 1) for i in range(8)])
    np.savez(tmp_path / "mine.npz", images=images)
    report = json.loads(run_in_process("evaluate.py", *args, str(tmp_path / "mine.npz"), "--no-reference",
                                       "--json").stdout.splitlines()[-1])
    row = report["rows"]["mine.npz"]
    assert row["accuracy"] is None and np.isfinite(row["fid"]) and row["n"] == 8
    assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
