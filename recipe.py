"""A preset's default recipe retrained from nothing and scored, so that no preset's defaults go unmeasured on its own
data: `python benchmark.py --preset NAME --retrain [--report]`.

The tokenizer and the GPT are trained by their own scripts, as a user runs them (`vqvae_train.py`, then
`transformer_train.py`), into a folder of their own; then the tokenizer's reconstructions of the test set (the
ceiling) and the GPT's samples at its default sampling point are scored against the test set by the dataset's
classifier. The tokenizer's per-epoch validation MSE and codebook use show whether its training was stable.
"""
import os
import subprocess
import sys

import config
import data
import device as devices
import metrics
from checkpoint import CheckpointError, load_file, load_pair, prior_path, tokenizer_path
from sampling import class_ids, draw_images

SCRIPTS = ("vqvae_train.py", "transformer_train.py")


def retrain_overrides(preset, overrides):
    """The --set assignments that send a retrained recipe's checkpoints and figures to folders of their own, apart
    from the user's runs: checkpoints/retrain/<preset>/ and _results/retrain/<preset>/ (under any checkpoint_dir or
    results_dir the overrides give; the dataset's own folder is added below them as usual)."""
    def root(field):
        given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].strip() == field]
        return given[-1] if given else getattr(config.Config, field)
    return [f"{field}={os.path.join(root(field), 'retrain', preset)}" for field in ("checkpoint_dir", "results_dir")]


def train(script_flags):
    """Run both training scripts from scratch with the given --preset/--set/--seed/--device flags."""
    here = os.path.dirname(os.path.abspath(__file__))
    for script in SCRIPTS:
        command = [sys.executable, os.path.join(here, script), *script_flags, "--overwrite"]
        print(f"retrain: {' '.join(command[1:])}", flush=True)
        if subprocess.run(command).returncode != 0:
            raise CheckpointError(f"{script} failed (its message is above); the recipe was not scored")


def tokenizer_epochs(retrained):
    """The tokenizer's history: per epoch, its val MSE, lowest codebook use and training seconds so far."""
    return load_file(tokenizer_path(retrained, multiscale=False))["history"]


def score(retrained, n):
    """{'ceiling': metrics of the tokenizer's reconstructions of the first n test images, 'gpt': metrics of n GPT
    samples in the data's class shares at the GPT's default sampling point, 'setting': (T, g), ...}."""
    cfg = retrained
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    spec = data.describe(cfg.data)
    classifier = metrics.load_classifier(metrics.classifier_path(cfg), device, spec)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    _, test_feats = metrics.classify(classifier, test_images, device)
    gpt_path = prior_path(cfg, "gpt")
    prior, vqvae, _ = load_pair(gpt_path, None, device, dataset=spec.name)
    ceiling = metrics.score(classifier, metrics.reconstructions(vqvae, test_images[:n], device), test_labels[:n],
                            test_feats, device)
    temperature, cfg_scale = config.sampling_settings(cfg, prior)
    classes, labels = class_ids(n, prior, unconditional=False, proportions=data.class_proportions(cfg.data))
    images = data.to_uint8(draw_images(prior, vqvae, classes, device, dtype, temperature, cfg.sample.top_k, cfg_scale,
                                       cfg.sample.batch_size, cfg.seed))
    samples = metrics.score(classifier, images, labels, test_feats, device)
    gpt_history = load_file(gpt_path)["history"]
    return {"ceiling": ceiling, "gpt": samples, "setting": (temperature, cfg_scale), "n": n,
            "gpt_seconds": gpt_history[-1]["seconds"], "gpt_val_loss": gpt_history[-1]["val_loss"],
            "classifier": os.path.relpath(metrics.classifier_path(cfg))}


def in_words(cfg):
    """The recipe's main choices, for the report: grid, codes, adversary, epochs."""
    v, t = cfg.vqvae, cfg.vqvae_train
    adversary = (f"adversary weight {t.gan_weight:g} from epoch {t.gan_start_epoch}" if t.gan_weight > 0
                 else "no adversary (MSE only)")
    return (f"a {v.grid_size}x{v.grid_size}x{v.num_codebooks} tokenizer with {v.codebook_size} codes, {adversary}, "
            f"{t.epochs} epochs; a GPT of {cfg.gpt.n_layer} layers, d = {cfg.gpt.d_model}, {cfg.gpt_train.epochs} "
            f"epochs")
