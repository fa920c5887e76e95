"""Stage 2: train the raster-order GPT on the VQ-VAE's tokens.

    python transformer_train.py                  # needs checkpoints/vqvae.pt from vqvae_train.py
    python transformer_train.py --resume         # continue an interrupted run

The dataset is encoded once and cached under data/tokens/, keyed by the tokenizer's fingerprint. Writes
checkpoints/gpt.pt (weights + config + the tokenizer it was trained on), and into _results/transformer/ a grid of
samples at temperature 1.0 every `gpt_train.sample_every` epochs (one row per digit 0-9) and the loss curves.
"""
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

import config
import data
import training
from checkpoint import CheckpointError, atomic_save, default_path, load_vqvae
from generator import draw_images
from models import device as devices
from models.gpt import GPT, grid_to_sequence


def make_optimizer(model, tc):
    """AdamW with weight decay on matrices only (not on biases, norms or embeddings), as in GPT-2 / nanoGPT."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.95))


@torch.no_grad()
def validation_loss(model, tokens_NL, labels_N, device, dtype, batch_size=1000):
    """Mean cross-entropy per token (nats) of the class-conditional model on held-out tokens."""
    model.eval()
    total = 0.0
    for i in range(0, len(tokens_NL), batch_size):
        tokens, labels = tokens_NL[i:i + batch_size].to(device), labels_N[i:i + batch_size].to(device)
        with devices.autocast(device, dtype):
            logits = model(tokens, labels)
        total += F.cross_entropy(logits.float().reshape(-1, model.V), tokens.reshape(-1), reduction="sum").item()
    return total / tokens_NL.numel()


def train_epoch(model, optimizer, scaler, tokens_NL, labels_N, cfg, epoch, device, dtype, step, total_steps):
    model.train()
    tc = cfg.gpt_train
    rng = training.epoch_generator(cfg.seed, epoch)
    batches = data.batch_indices(len(tokens_NL), tc.batch_size, rng)
    total = 0.0
    bar = tqdm(batches, desc=f"gpt epoch {epoch}/{tc.epochs}", leave=False)
    for batch in bar:
        tokens, labels = tokens_NL[batch].to(device), labels_N[batch].clone()
        dropped = torch.rand(len(labels), generator=rng) < cfg.gpt.class_dropout  # teaches the "no class" id
        labels[dropped] = model.no_class
        training.set_lr(optimizer, training.lr_at(step, total_steps, tc.lr, tc.warmup_steps, tc.min_lr_ratio))
        with devices.autocast(device, dtype):
            loss = model.loss(tokens, labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        total += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / len(batches), step


def save_sample_grid(model, vqvae, cfg, device, dtype, path):
    """One row per digit 0-9 at temperature 1.0 (and the configured guidance), from a fixed seed so grids of
    different epochs compare."""
    classes = torch.arange(10).repeat_interleave(cfg.sample.per_class)
    images = draw_images(model, vqvae, classes, device, dtype, temperature=1.0, cfg_scale=cfg.sample.cfg_scale,
                         seed=cfg.seed)
    training.save_image_grid(images, path, nrow=cfg.sample.per_class)


def main(argv=None):
    parser = config.make_parser("Train the raster-order GPT prior on VQ-VAE tokens.")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint's last epoch")
    parser.add_argument("--vqvae", default=None, help="tokenizer checkpoint (default: checkpoints/vqvae.pt)")
    args, cfg = config.parse_config(parser, argv)
    try:
        train(cfg, resume=args.resume, vqvae_path=args.vqvae or default_path(cfg, "vqvae"))
    except (data.DataError, CheckpointError) as e:
        sys.exit(f"error: {e}")


def train(cfg, resume=False, vqvae_path="checkpoints/vqvae.pt"):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    ckpt_path = default_path(cfg, "gpt")
    results_dir = os.path.join(cfg.results_dir, "transformer")

    vqvae, vqvae_ckpt = load_vqvae(vqvae_path, device)
    tokenizer_id = vqvae_ckpt["tokenizer_id"]
    tokens = data.load_or_build_tokens(cfg.data, tokenizer_id, vqvae.encode)
    train_tokens, train_labels = grid_to_sequence(tokens["train"][0]), tokens["train"][1]
    test_tokens, test_labels = grid_to_sequence(tokens["test"][0]), tokens["test"][1]

    model = GPT(cfg.gpt, vqvae.grid_shape, vqvae.cfg.codebook_size).to(device)
    optimizer = make_optimizer(model, cfg.gpt_train)
    scaler = devices.grad_scaler(device, dtype)
    run_cfg = {**training.run_config(cfg, "data", "gpt", "gpt_train"), "tokenizer_id": tokenizer_id}
    start_epoch, history, elapsed = 1, [], 0.0
    if resume:
        ckpt = training.resume_state(ckpt_path, "gpt", run_cfg)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, history, elapsed = ckpt["epoch"] + 1, ckpt["history"], ckpt["train_seconds"]
        print(f"resuming after epoch {ckpt['epoch']} from {ckpt_path}")

    H, W, K = vqvae.grid_shape
    print(f"GPT: sequence of {model.L} tokens ({H}x{W}x{K}), {training.count_parameters(model) / 1e6:.2f}M "
          f"parameters, tokenizer {tokenizer_id}; {devices.describe(device, dtype)}")
    steps_per_epoch = math.ceil(len(train_tokens) / cfg.gpt_train.batch_size)
    total_steps, step = cfg.gpt_train.epochs * steps_per_epoch, (start_epoch - 1) * steps_per_epoch
    for epoch in range(start_epoch, cfg.gpt_train.epochs + 1):
        t0 = time.time()
        train_loss, step = train_epoch(model, optimizer, scaler, train_tokens, train_labels, cfg, epoch, device,
                                       dtype, step, total_steps)
        elapsed += time.time() - t0
        val_loss = validation_loss(model, test_tokens, test_labels, device, dtype)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "val_bits_per_token": val_loss / math.log(2), "seconds": elapsed})
        print(f"epoch {epoch}: train loss {train_loss:.4f}  val loss {val_loss:.4f} nats "
              f"= {val_loss / math.log(2):.3f} bits/token  ({elapsed:.0f}s)")
        if epoch % cfg.gpt_train.sample_every == 0 or epoch == cfg.gpt_train.epochs:
            save_sample_grid(model, vqvae, cfg, device, dtype, os.path.join(results_dir, f"samples_epoch{epoch:03d}.png"))
        training.plot_curves(history, ("train_loss", "val_loss"), os.path.join(results_dir, "loss.png"),
                             "GPT cross-entropy (nats per token)")
        atomic_save({"kind": "gpt", "config": config.to_dict(cfg.gpt),
                     "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                     "optimizer": optimizer.state_dict(), "epoch": epoch, "history": history,
                     "train_seconds": elapsed, "run_config": run_cfg, "grid_shape": list(vqvae.grid_shape),
                     "codebook_size": vqvae.cfg.codebook_size, "tokenizer_id": tokenizer_id,
                     "vqvae_path": vqvae_path}, ckpt_path)
    print(f"checkpoint: {ckpt_path}\nsamples and curves: {results_dir}/")


if __name__ == "__main__":
    main()
