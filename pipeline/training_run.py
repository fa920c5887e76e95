"""The skeleton both training scripts share, so that each script shows its own model, its own epoch loop and
nothing else.

    launch(cfg, train)                       the script's edge: torchrun's process group, signals, one-line errors
    with TrainingRun(cfg, ...) as run:       seed, device, dtype, folders, the dataset's key, the checkpoint's lock
        if not run.begin(model, optimizer, steps_per_epoch, resume): return      # fresh, resumed, or already done
        for epoch in run.epochs():
            with run.timed():
                ... train_epoch(run, model, epoch) ...                            # the script's own loop
            if run.rank0_writes():
                run.save(epoch, row, **fields)                                   # history + an atomic checkpoint
                run.draw(lambda: ...)                                            # figures, drawing no randomness

Under torchrun every process runs the loop; `rank0_writes` gathers every process's RNG streams and lets only rank 0
validate, save and draw, while the others wait at the barrier that `draw` ends with.
"""
import math
import os
import signal
import sys
import time
from contextlib import contextmanager

import torch

from pipeline import cli, data, datasets, devices, distributed, training
from pipeline.errors import Diverged
from pipeline.files import (RunLock, atomic_save, ensure_folder, missing_folders, remove_empty_folders,
                            remove_file)
from pipeline.settings import to_dict


def launch(cfg, train):
    """A training script's edge: join torchrun's process group when launched by it (cfg.device becomes this
    process's device), run train(), and end every expected failure with one line on stderr."""
    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)  # torchrun stops the other processes with SIGTERM when one fails
    resume = "the checkpoint keeps the last finished epoch: continue with --resume"
    try:
        with cli.one_line_errors():
            cfg.device = distributed.start(cfg.device)
            train()
    except KeyboardInterrupt:
        why = "stopped by a signal (under torchrun: another process of this run ended; see torchrun's report)" \
            if distributed.active() else "interrupted"
        sys.exit(f"error: {why}; {resume}")
    except torch.distributed.DistError as e:
        sys.exit(f"error: another process of this run stopped ({str(e).strip().splitlines()[0][:100]}); {resume}")
    finally:
        distributed.stop()


class TrainingRun:
    """One run training one model (`section`: vqvae, gpt, var, diffusion; its schedule is `<section>_train`)."""

    def __init__(self, cfg, section, ckpt_path, results_dir, resume=False, overwrite=False, tokenizer_training=False):
        devices.seed_everything(cfg.seed + distributed.rank())  # dropout and noise differ; weights come from rank 0
        self.cfg, self.section, self.tc = cfg, section, getattr(cfg, f"{section}_train")
        self.ckpt_path, self.results_dir = ckpt_path, results_dir
        self.resume, self.overwrite = resume, overwrite
        self.device = devices.pick_device(cfg.device)
        self.dtype = devices.amp_dtype(self.device, cfg.amp, tokenizer_training=tokenizer_training)
        self.lock = RunLock(ckpt_path, enabled=distributed.is_main())
        self.start_epoch, self.step, self.total_steps, self.history, self.elapsed = 1, 0, 0, [], 0.0

    # --- before the first epoch -------------------------------------------------------------------------------------
    def __enter__(self):
        """One run at a time per checkpoint file (rank 0 holds the lock), and never over a trained model unasked."""
        self.made_folders = missing_folders(os.path.dirname(os.path.abspath(self.ckpt_path)), self.results_dir)
        self.lock.__enter__()
        training.refuse_overwrite(self.ckpt_path, self.resume, self.overwrite)
        ensure_folder(self.results_dir)
        self.spec = datasets.spec_of(self.cfg.data)  # for a folder this scans its files: once per run
        self.data_key = self.spec.key
        self.run_config = training.run_config(self.cfg, "data", self.section, f"{self.section}_train")
        if self.data_key != self.cfg.data.dataset:  # a folder of images: resuming on changed contents is another run
            self.run_config["data_key"] = self.data_key
        return self

    def __exit__(self, *exc):
        failed_in_new_folder = (exc[0] is not None and distributed.is_main() and not os.path.exists(self.ckpt_path)
                                and os.path.dirname(os.path.abspath(self.ckpt_path)) in self.made_folders)
        if failed_in_new_folder:  # its lock file goes too, removed while still held so no other run can take it
            remove_file(self.lock.path)
        released = self.lock.__exit__(*exc)
        if exc[0] is not None and distributed.is_main():  # a run that failed leaves no empty folders behind
            remove_empty_folders(self.made_folders)
        return released

    def begin(self, model, optimizer, n_train):
        """Attach the model and its optimizer, to train on n_train items an epoch; with --resume put both back where
        the checkpoint left them (after checking it was made with the same run config). Returns False when the run
        has nothing left to train."""
        self.model, self.optimizer = model, optimizer
        self.scaler = devices.grad_scaler(self.device, self.dtype)
        self.resumed = None
        if self.resume:
            self.resumed = training.resume_state(self.ckpt_path, self.section, self.run_config,
                                                 f"{self.section}_train")
            if self.resumed is None:
                return False
            self.start_epoch, self.history, self.elapsed = training.restore(self.resumed, model, optimizer,
                                                                            self.scaler)
            print(f"resuming after epoch {self.resumed['epoch']} from {self.ckpt_path}")
        self.loss_fn = distributed.loss_function(model, self.device)  # model.loss, or the same through DDP
        steps_per_epoch = len(distributed.usable_batches(data.batch_indices(n_train, self.tc.batch_size,
                                                                            shuffle=False)))
        self.total_steps = self.tc.epochs * steps_per_epoch
        self.step = (self.start_epoch - 1) * steps_per_epoch
        return True

    # --- inside an epoch ----------------------------------------------------------------------------------------------
    def epochs(self):
        return range(self.start_epoch, self.tc.epochs + 1)

    @contextmanager
    def timed(self):
        """Training seconds: what the checkpoint's history reports (validation and figures are not counted)."""
        t0 = time.time()
        yield
        self.elapsed += time.time() - t0

    def batches(self, n, rng):
        """The epoch's global batches of indices into n items, in the order `rng` shuffles them: the same on every
        process (each trains on its shard)."""
        return distributed.usable_batches(data.batch_indices(n, self.tc.batch_size, rng))

    def epoch_rng(self, epoch):
        return training.epoch_generator(self.cfg.seed, epoch)

    def set_lr(self, warmup_steps=0, min_ratio=0.0):
        lr = training.lr_at(self.step, self.total_steps, self.tc.lr, warmup_steps, min_ratio)
        training.set_lr(self.optimizer, lr)

    def loss_value(self, loss, epoch):
        """The loss as a number, the same on every process; stops at the first non-finite one (Diverged) before it
        changes the weights, leaving the checkpoint on disk (the last good epoch, if any) as it was."""
        value = distributed.mean(loss.item())  # every process stops together on a non-finite loss
        if not math.isfinite(value):
            kept = f"{self.ckpt_path} is left as it was" if os.path.exists(self.ckpt_path) else "nothing was saved"
            raise Diverged(f"the loss became {value} at epoch {epoch}, step {self.step + 1}; training stopped and "
                           f"{kept}; lower the learning rate (--set {self.section}_train.lr=...) and run again")
        return value

    def backward(self, loss):
        """Gradients of the (AMP-scaled) loss, from zero."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def optimizer_step(self, grad_clip=None):
        """One optimizer step (the gradients unscaled and clipped to `grad_clip` when given); counts the step."""
        if grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1

    # --- after an epoch -----------------------------------------------------------------------------------------------
    def rank0_writes(self):
        """Every process's RNG streams are gathered (for the checkpoint); rank 0 goes on to validate and write, the
        others wait for it at the barrier and return False."""
        self.rng_states = training.gathered_rng_states()
        if distributed.is_main():
            return True
        distributed.barrier()
        return False

    def save(self, epoch, row, config_section, **fields):
        """The epoch's row in the history, then the checkpoint, atomically: the weights, the config that built
        them, the run config (what --resume compares), `fields`, and what resuming bit for bit needs."""
        self.history.append({"epoch": epoch, **row, "seconds": self.elapsed})
        atomic_save({"kind": self.section, "dataset": self.cfg.data.dataset, "preset": self.cfg.preset,
                     "data_key": self.data_key, "config": to_dict(config_section),
                     "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                     "history": self.history, "run_config": self.run_config, **fields,
                     **training.resumable_state(epoch, self.optimizer, self.scaler, self.elapsed, self.rng_states)},
                    self.ckpt_path)

    def draw(self, figures):
        """figures() after the checkpoint, drawing no randomness of the run; then the other processes go on."""
        with devices.forked_rng(self.device):
            figures()
        distributed.barrier()
