"""Stage 1: train the multi-codebook VQ-VAE tokenizer on the configured dataset (MNIST by default).

    python vqvae_train.py                                  # default 4x4x1 grid
    python vqvae_train.py --preset mnist_4x4x2             # or any --set vqvae.<field>=<value>
    python vqvae_train.py --preset mnist_var               # VAR's multi-scale residual tokenizer
    python vqvae_train.py --preset fashion_mnist           # another dataset: checkpoints/fashion_mnist/vqvae.pt
    python vqvae_train.py --resume                         # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 vqvae_train.py   # 2 processes (DDP; see distributed.py)

Writes checkpoints/vqvae.pt (weights + config + tokenizer fingerprint), and into _results/vqvae/: originals over
reconstructions of fixed test images every `vqvae_train.sample_every` epochs, and loss / codebook-usage curves.
The multi-scale tokenizer writes checkpoints/vqvae_multiscale.pt and _results/vqvae/multiscale_*.png, among them
`multiscale_scales_epochNNN.png`: each column decodes one more scale (1x1, then 1x1 + 2x2, ...), the last is the
original, so the image sharpens scale by scale.
"""
import os
from contextlib import contextmanager, nullcontext

import torch
from tqdm import tqdm

from models.discriminator import PatchDiscriminator, hinge_loss
from models.vqvae import VQVAE
from pipeline import cli, data, devices, distributed, figures, training
from pipeline.checkpoint import tokenizer_fingerprint, tokenizer_path
from pipeline.errors import CheckpointError
from pipeline.tokenizer_metrics import reconstruction_stats
from pipeline.training_run import TrainingRun, launch


@torch.no_grad()
def save_reconstructions(model, images_uint8, device, path):
    """Originals (top row) over their reconstructions (bottom row)."""
    model.eval()
    x = data.to_model_range(images_uint8).to(device)
    recon = model.decode(model.encode(x)).cpu()
    figures.save_image_grid(torch.cat([x.cpu(), recon]), path, nrow=len(x))


@torch.no_grad()
def save_scale_strip(model, images_uint8, device, path):
    """Multi-scale tokenizer: one row per test image; column k decodes scales 1..k, the last column is the original."""
    model.eval()
    x = data.to_model_range(images_uint8).to(device)
    idx_list = model.encode(x)
    columns = [model.decode(idx_list[:k]).cpu() for k in range(1, len(idx_list) + 1)] + [x.cpu()]
    figures.save_image_grid(torch.stack(columns, dim=1).flatten(0, 1), path, nrow=len(columns))


class Adversary:
    """The patch discriminator of `vqvae_train.gan_weight > 0`, its optimizer and its training step. It joins at
    `gan_start_epoch`; before that, and with gan_weight = 0, training is MSE + commitment alone."""

    def __init__(self, cfg, device):
        tc = cfg.vqvae_train
        self.net = PatchDiscriminator(cfg.vqvae.image_channels, tc.gan_channels).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=tc.gan_lr, betas=(0.5, 0.9), weight_decay=0.0)
        self.train_net = distributed.wrap(self.net, device)  # DDP under torchrun: the discriminators stay equal
        self.weight, self.start_epoch = tc.gan_weight, tc.gan_start_epoch

    def judge(self, epoch):
        """What the decoder's loss scores its reconstructions with this epoch: the discriminator, or None."""
        return self.net if epoch >= self.start_epoch else None

    @contextmanager
    def frozen(self):
        """The decoder's step: gradients flow through the discriminator to the reconstruction, not into its weights
        (under DDP, a gradient outside its own backward would upset its gradient averaging)."""
        self.net.requires_grad_(False)
        try:
            yield
        finally:
            self.net.requires_grad_(True)

    def step(self, real_BCHW, recon_BCHW):
        """One hinge-loss step on real images and (detached) reconstructions, in float32 (the network is small);
        one forward over both halves, as DDP wants one forward per backward. Returns the loss."""
        logits = self.train_net(torch.cat([real_BCHW, recon_BCHW]).float())
        loss = hinge_loss(*logits.chunk(2))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def state_dict(self):
        return {"model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def train_epoch(run, model, images_uint8, epoch, snapshot, adversary=None):
    """One pass over the data; snapshot(step) saves reconstructions at the configured early steps. With an
    adversary, each step is the decoder's step (against a frozen discriminator) then the discriminator's."""
    model.train()
    tc = run.tc
    batches = run.batches(len(images_uint8), run.epoch_rng(epoch))
    judge = adversary.judge(epoch) if adversary else None
    sums = {"loss": 0.0, "mse": 0.0, "perplexity": 0.0, **({"d_loss": 0.0, "gan_weight": 0.0} if judge else {})}
    bar = tqdm(batches, desc=f"vqvae epoch {epoch}/{tc.epochs}", leave=False, disable=distributed.progress_off())
    for batch in bar:
        x = data.to_model_range(images_uint8[distributed.shard(batch)]).to(run.device)
        run.set_lr(warmup_steps=0, min_ratio=0.1)
        with adversary.frozen() if judge else nullcontext():  # the decoder's forward and backward
            with devices.autocast(run.device, run.dtype):
                loss, parts = run.loss_fn(x, judge, adversary.weight) if judge else run.loss_fn(x)
            loss_value = run.loss_value(loss, epoch)
            run.backward(loss)
        mse, perplexity_K = parts["mse"], parts["perplexity_K"]
        run.optimizer_step()
        if judge:
            sums["d_loss"] += adversary.step(x, parts["recon_BCHW"])
            sums["gan_weight"] += parts["gan_weight"].item()
        if run.step in tc.snapshot_steps and distributed.is_main():
            snapshot(run.step)
            model.train()
        sums["loss"] += loss_value
        sums["mse"] += mse.item() / 4
        sums["perplexity"] += perplexity_K.mean().item()
        bar.set_postfix(mse=f"{mse.item() / 4:.4f}", ppl=f"{perplexity_K.mean().item():.0f}")
    return {f"train_{k}": distributed.mean(v / len(batches)) for k, v in sums.items()}


def command_line():
    """The script's flags (README's and docs' commands are parsed with it in the tests)."""
    return cli.make_training_parser("Train the VQ-VAE tokenizer.")


def main(argv=None):
    args, cfg = cli.parse_config(command_line(), argv)
    launch(cfg, lambda: train(cfg, resume=args.resume, overwrite=args.overwrite))


def layout(model, cfg):
    """The tokenizer's token layout in words, for the first line of the log."""
    if model.multiscale:
        return (f"scales {'+'.join(f'{s}x{s}' for s in cfg.vqvae.scales)} = {model.sequence_length} tokens, one "
                f"shared codebook of {cfg.vqvae.codebook_size}")
    H, W, K = model.grid_shape
    return f"{H}x{W}x{K} tokens, {cfg.vqvae.codebook_size} codes per codebook"


def print_epoch(epoch, train_stats, val, multiscale, elapsed):
    usage = " ".join(f"{u:.0%}/{p:.0f}" for u, p in zip(val["usage"], val["perplexity"]))
    adversarial = (f"  discriminator loss {train_stats['train_d_loss']:.3f}, adaptive weight "
                   f"{train_stats['train_gan_weight']:.3g}" if "train_d_loss" in train_stats else "")
    print(f"epoch {epoch}: train mse {train_stats['train_mse']:.4f}  val mse {val['val_mse']:.4f}  "
          f"{'per-scale' if multiscale else 'codebook'} usage/perplexity {usage}{adversarial}  ({elapsed:.0f}s)")


def save_epoch_figures(model, show, device, cfg, epoch, history, results_dir, tag):
    """Reconstructions of the fixed test images (and the scale strip of a multi-scale tokenizer), and the curves."""
    if epoch % cfg.vqvae_train.sample_every == 0 or epoch == cfg.vqvae_train.epochs:
        save_reconstructions(model, show, device, os.path.join(results_dir, f"{tag}recon_epoch{epoch:03d}.png"))
        if model.multiscale:
            save_scale_strip(model, show[:8], device, os.path.join(results_dir, f"{tag}scales_epoch{epoch:03d}.png"))
    figures.plot_curves(history, ("train_mse", "val_mse"), os.path.join(results_dir, f"{tag}loss.png"),
                        "VQ-VAE reconstruction MSE (pixels in [0, 1])", "MSE")


def train(cfg, resume=False, overwrite=False):
    """Train (or continue) the tokenizer."""
    tag = "multiscale_" if cfg.vqvae.scales else ""  # the two tokenizers share the results folder, not file names
    with TrainingRun(cfg, "vqvae", tokenizer_path(cfg), os.path.join(cfg.results_dir, "vqvae"), resume, overwrite,
                     tokenizer_training=True) as run:
        device = run.device
        train_images, _ = data.load_split(cfg.data, train=True)
        test_images, _ = data.load_split(cfg.data, train=False)
        model = VQVAE(cfg.vqvae).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.vqvae_train.lr,
                                      weight_decay=cfg.vqvae_train.weight_decay)
        adversary = Adversary(cfg, device) if cfg.vqvae_train.gan_weight > 0 else None
        if not run.begin(model, optimizer, len(train_images)):
            return
        if adversary and run.resumed:
            adversary.load_state_dict(run.resumed["discriminator"])
        print(run.spec.in_words(len(train_images), len(test_images)))
        print(f"VQ-VAE on {cfg.data.dataset}: {layout(model, cfg)}, {training.count_parameters(model) / 1e6:.2f}M "
              f"parameters; {devices.in_words(device, run.dtype)}")
        show = test_images[:cfg.vqvae_train.num_show]

        def snapshot(at_step):
            save_reconstructions(model, show, device, os.path.join(run.results_dir, f"{tag}recon_step{at_step:05d}.png"))

        for epoch in run.epochs():
            with run.timed():
                train_stats = train_epoch(run, model, train_images, epoch, snapshot, adversary)
            tokenizer_id = tokenizer_fingerprint(model)
            if not distributed.all_equal(tokenizer_id):
                raise CheckpointError("the processes' codebooks diverged; this is a bug: please report it")
            if not run.rank0_writes():
                continue
            val = reconstruction_stats(model, test_images, device, run.dtype)
            run.save(epoch, {**train_stats, "val_mse": val["val_mse"], "usage": min(val["usage"])}, cfg.vqvae,
                     metrics=val, tokenizer_id=tokenizer_id,
                     **({"discriminator": adversary.state_dict()} if adversary else {}))
            print_epoch(epoch, train_stats, val, model.multiscale, run.elapsed)
            run.draw(lambda: save_epoch_figures(model, show, device, cfg, epoch, run.history, run.results_dir, tag))
        if distributed.world_size() > 1:
            print(f"{distributed.world_size()} processes trained tokenizer {tokenizer_id} with identical codebooks")
        print(f"checkpoint: {run.ckpt_path}\nreconstructions and curves: {run.results_dir}/")


if __name__ == "__main__":
    main()
