"""What both training stages share below the run skeleton (training_run.py): the learning-rate schedule, resuming,
RNG states, and run bookkeeping. (Their PNGs and curves are drawn by figures.py.)"""
import dataclasses
import math
import os
import random

import numpy as np
import torch

from config import Config
from pipeline import distributed, settings
from pipeline.checkpoint import load_checkpoint
from pipeline.errors import CheckpointError


def lr_at(step, total_steps, base_lr, warmup_steps=0, min_ratio=0.0):
    """Linear warmup to base_lr, then cosine decay to base_lr * min_ratio at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def refuse_overwrite(path, resume, overwrite):
    """A new run never replaces a trained model silently: it needs --resume (continue it) or --overwrite."""
    if os.path.exists(path) and not (resume or overwrite):
        raise CheckpointError(f"{path} already holds a trained model; continue it with --resume, replace it with "
                              f"--overwrite, or train elsewhere with --set checkpoint_dir=DIR")


def resume_state(path, kind, run_config, train_section):
    """The checkpoint to continue from, after checking it was made with the same config. The one field that may
    differ is `<train_section>.epochs`, upwards: that extends a run (see schedule_note). Returns None when the run
    has already finished its epochs (nothing to do)."""
    ckpt = load_checkpoint(path, kind, hint="; nothing to resume, drop --resume")
    saved = with_new_fields(ckpt.get("run_config", {}))
    epochs_now = run_config[train_section]["epochs"]
    comparable = {**saved, train_section: {**saved.get(train_section, {}), "epochs": epochs_now}} if saved else saved
    if comparable != run_config:
        changed = sorted(k for k in set(run_config) | set(saved) if run_config.get(k) != comparable.get(k))
        if changed == ["data_key"]:  # the same flags: the folder's images changed under them
            raise CheckpointError(f"{path} was trained on the folder's images as they were; files were added, "
                                  f"removed or changed since, so this would be another run: restore them, or drop "
                                  f"--resume (with --overwrite, or --set run=NAME to keep this one)")
        raise CheckpointError(f"{path} was trained with another config (differs in: {', '.join(changed)}); "
                              f"resume with the same --preset/--set flags or drop --resume")
    if epochs_now < ckpt["epoch"]:
        raise CheckpointError(f"{path} has already trained {ckpt['epoch']} epochs, more than "
                              f"{train_section}.epochs={epochs_now}; to train longer, resume with "
                              f"--set {train_section}.epochs=N for some N > {ckpt['epoch']}")
    if epochs_now == ckpt["epoch"]:
        print(f"{path} has finished its run ({epochs_now} epoch{'s' * (epochs_now != 1)}); nothing to resume "
              f"(to train longer: --resume "
              f"--set {train_section}.epochs=N, N > {epochs_now})")
        return None
    planned = saved.get(train_section, {}).get("epochs", epochs_now)
    if planned != epochs_now:
        print(f"extending the run from {planned} to {epochs_now} epochs: the learning-rate schedule is laid out again "
              f"over {epochs_now} epochs from here (close to, not the same as, a {epochs_now}-epoch run from the "
              f"start)")
    return ckpt


def with_new_fields(saved):
    """A saved run config with the fields added to config.py since it was saved, at their defaults: an older
    checkpoint was trained as the default of a field it does not know (as it was then: settings.DEFAULT_BEFORE)."""
    defaults = Config()
    sections = [name for name, values in saved.items()
                if isinstance(values, dict) and dataclasses.is_dataclass(getattr(defaults, name, None))]
    filled = run_config(defaults, *sections)
    for name in sections:  # a field whose default changed since: the old default is what the run trained with
        filled[name].update(settings.DEFAULT_BEFORE.get(type(getattr(defaults, name)).__name__, {}))
    return {name: {**filled[name], **values} if name in filled else values for name, values in saved.items()}


def rng_state():
    """Every random stream training draws from (dropout, class dropout, diffusion noise, dead-code restarts), saved
    with each checkpoint so a resumed run continues exactly as the uninterrupted one would."""
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def resumable_state(epoch, optimizer, scaler, train_seconds, rng_states):
    """What a checkpoint holds beyond the weights so that --resume continues bit for bit: the optimizer, the AMP
    loss scaler, every RNG stream (rng_states: gathered_rng_states(), one per process), and where the run stands."""
    return {"epoch": epoch, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_states[0] if len(rng_states) == 1 else rng_states, "train_seconds": train_seconds}


def gathered_rng_states():
    """Every process's RNG streams, in rank order (called by all processes; rank 0 saves them)."""
    return distributed.gather(rng_state())


def restore(ckpt, model, optimizer, scaler):
    """Put a run back where its checkpoint left it; returns (first epoch to train, history, seconds so far)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    states = ckpt.get("rng")  # checkpoints from before RNG states were saved resume, but not bit for bit
    if isinstance(states, list):  # one per process of a torchrun run
        states = states[distributed.rank()] if len(states) == distributed.world_size() else None
    elif distributed.world_size() > 1:
        states = None  # a single-process run continued by several: each keeps its own seed's stream
    if states:
        set_rng_state(states)
    return ckpt["epoch"] + 1, ckpt["history"], ckpt["train_seconds"]


def run_config(cfg, *sections):
    """The config sections that define a run, as plain dicts (what --resume compares). A section's sampling-only
    fields (a prior's temperature) are left out: they change nothing in training, and older checkpoints lack them."""
    def training_fields(section):
        skip = getattr(section, "SAMPLING_ONLY", ())
        return {k: v for k, v in settings.to_dict(section).items() if k not in skip}
    return {name: training_fields(getattr(cfg, name)) for name in sections}


def count_parameters(model, trainable=False):
    """All parameters, or only those that train (VAR holds a frozen copy of its tokenizer's quantizer)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def epoch_generator(seed, epoch):
    """The shuffling RNG of one epoch: the same for a fresh run and a resumed one."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)
