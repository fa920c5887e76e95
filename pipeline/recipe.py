"""A preset's default recipe retrained from nothing and scored, so that no preset's defaults go unmeasured on its own
data: `python benchmark.py --preset NAME --retrain [--report]`.

The tokenizer and the GPT are trained by their own scripts, as a user runs them (`vqvae_train.py`, then
`transformer_train.py`), into a folder of their own; benchmark.py then scores the tokenizer's reconstructions of
the test set (the ceiling) and the GPT's samples at its default sampling point as its report does. The tokenizer's
per-epoch validation MSE and codebook use show whether its training was stable.
"""
import os
import subprocess
import sys

import config
from pipeline.checkpoint import load_file, tokenizer_path
from pipeline.errors import CheckpointError

SCRIPTS = ("vqvae_train.py", "transformer_train.py")


def retrain_overrides(preset, overrides):
    """The --set assignments that send a retrained recipe's checkpoints and figures to folders of their own, apart
    from the user's runs: checkpoints/retrain/<preset>/ and _results/retrain/<preset>/ (under any checkpoint_dir or
    results_dir the overrides give; the dataset's own folder is added below them as usual, the preset's run folder
    is not: the preset already names the folder)."""
    def root(field):
        given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].strip() == field]
        return given[-1] if given else getattr(config.Config, field)
    return [*(f"{field}={os.path.join(root(field), 'retrain', preset)}" for field in ("checkpoint_dir", "results_dir")),
            "run="]


def train(script_flags):
    """Run both training scripts from scratch with the given --preset/--set/--seed/--device flags."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the scripts sit above pipeline/
    for script in SCRIPTS:
        command = [sys.executable, os.path.join(repo, script), *script_flags, "--overwrite"]
        print(f"retrain: {' '.join(command[1:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            raise CheckpointError(f"{script} failed (its message is above); the recipe was not scored")


def tokenizer_epochs(retrained):
    """The tokenizer's history: per epoch, its val MSE, lowest codebook use and training seconds so far."""
    return load_file(tokenizer_path(retrained, multiscale=False))["history"]


def in_words(cfg):
    """The recipe's main choices, for the report: grid, codes, adversary, epochs and batch sizes."""
    v, t = cfg.vqvae, cfg.vqvae_train
    adversary = (f"adversary weight {t.gan_weight:g} from epoch {t.gan_start_epoch}" if t.gan_weight > 0
                 else "no adversary (MSE only)" if v.ssim_weight == 0 else "no adversary")
    structural = f"{v.ssim_weight:g} x (1 - SSIM) beside the MSE, " if v.ssim_weight > 0 else ""
    g = cfg.gpt_train
    codes = {"vq": f"{v.codebook_size} codes", "rvq": f"{v.codebook_size} codes per residual stage",
             "fsq": f"FSQ's {v.codebook_size} codes (levels {','.join(map(str, v.fsq_levels))})"}[v.quantizer]
    return (f"a {v.grid_size}x{v.grid_size}x{v.num_codebooks} tokenizer with {codes}, {structural}{adversary}, "
            f"{t.epochs} epochs in batches of {t.batch_size}; a GPT of {cfg.gpt.n_layer} layers, d = "
            f"{cfg.gpt.d_model}, dropout {cfg.gpt.dropout:g}, {g.epochs} epochs in batches of {g.batch_size}")
