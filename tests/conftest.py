"""Shared fixtures: the repo root on sys.path, one torch thread (tiny tensors, busy 2-core machine), tiny configs,
and the tiny checkpoints that the end-to-end tests share, each trained once per test session by the scripts
themselves (as a user runs them). The shared folders are read only: a test that changes a checkpoint, or trains
beside one, copies what it needs into its own tmp_path first."""
import os
import shutil
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from pipeline import settings
from script_runs import EDIT_IMAGES, EDIT_SAMPLES, copy_run, dirs_of, finish, run, run_together, start  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def repo_root():
    return REPO


@pytest.fixture
def tiny_cfg():
    """The `tiny` preset: 4x4x1 grid, V=32, code_dim=4, channels (8,16,16), a 1-layer d=32 GPT."""
    return settings.build_config(preset="tiny")


# --- tiny checkpoints, trained once per session ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def trained_tokenizers(tmp_path_factory):
    """The tiny single-scale tokenizer (`--preset tiny`) and the multi-scale one (`--preset tiny_var`), each trained
    by vqvae_train.py (the two runs side by side) in a folder of its own: (single, multi), each holding ck/ (the
    checkpoint) and res/vqvae/ (its reconstructions and curves)."""
    single, multi = tmp_path_factory.mktemp("tokenizer"), tmp_path_factory.mktemp("tokenizer_multiscale")
    finish(start("vqvae_train.py", *dirs_of(single)), start("vqvae_train.py", *dirs_of(multi), preset="tiny_var"))
    return single, multi


@pytest.fixture(scope="session")
def pipeline(trained_tokenizers, tmp_path_factory):
    """The three scripts on the `tiny` preset, as a user runs them: the tokenizer (the shared one, trained in a
    folder of its own and copied here with its figures), the GPT prior, then the generator's temperature sweep
    grids and 30 samples into root/samples.npz. Returns (root, its --set flags)."""
    root = tmp_path_factory.mktemp("e2e")
    dirs = dirs_of(root)
    copy_run(trained_tokenizers[0], root)
    run("transformer_train.py", *dirs)
    run_together(("generator.py", *dirs), ("generator.py", *dirs, "--n", "30", "--save", str(root / "samples.npz")))
    return root, dirs


@pytest.fixture(scope="session")
def priors(trained_tokenizers, tmp_path_factory):
    """The multi-scale tokenizer and VAR, and the diffusion prior on the single-scale tokenizer (both tokenizers in
    this run's checkpoint folder, where --prior var and --prior diffusion look for them); 30 samples of each prior
    in root/var.npz and root/diffusion.npz, VAR's inpainting and diffusion's outpainting grids. Returns (root, its
    --set flags)."""
    single, multi = trained_tokenizers
    root = tmp_path_factory.mktemp("e2e_priors")
    dirs = dirs_of(root)
    copy_run(multi, root)
    shutil.copyfile(single / "ck" / "vqvae.pt", root / "ck" / "vqvae.pt")
    run_together(("transformer_train.py", *dirs, "--prior", "var"),
                 ("transformer_train.py", *dirs, "--prior", "diffusion"))
    edit = ["--edit-images", str(EDIT_IMAGES), "--edit-samples", str(EDIT_SAMPLES)]
    run_together(("generator.py", *dirs, "--prior", "var", "--n", "30", "--save", str(root / "var.npz")),
                 ("generator.py", *dirs, "--prior", "diffusion", "--steps", "4", "--n", "30", "--save",
                  str(root / "diffusion.npz")),
                 ("generator.py", *dirs, "--prior", "var", "--edit", "inpaint", *edit),
                 ("generator.py", *dirs, "--prior", "diffusion", "--edit", "outpaint", *edit))
    return root, dirs
