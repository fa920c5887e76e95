"""Stage 2: train a token prior on the VQ-VAE's tokens: the raster GPT, VAR or discrete diffusion.

    python transformer_train.py                       # raster GPT; needs checkpoints/vqvae.pt from vqvae_train.py
    python transformer_train.py --prior var           # next-scale VAR; needs checkpoints/vqvae_multiscale.pt
                                                      #   (python vqvae_train.py --preset mnist_var)
    python transformer_train.py --preset fashion_mnist --prior diffusion   # another dataset, the same commands
    python transformer_train.py --prior diffusion     # discrete diffusion (diffusion.noise = mask | uniform)
    python transformer_train.py --resume              # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 transformer_train.py --prior var   # 2 processes (DDP; distributed.py)

The dataset is encoded once and cached under data/tokens/, keyed by the tokenizer's fingerprint. Every prior
(models/prior.py) shares this script's loop: each exposes `loss(tokens_BL, class_B)` and `sample(...)`. Writes checkpoints/<prior>.pt
(weights + config + the tokenizer it was trained on; the uniform diffusion prior is diffusion_uniform.pt), and
into _results/transformer/ (GPT) or _results/<prior>/ a grid of samples at the prior's temperature every
`<prior>_train.sample_every` epochs (one row per class) and the loss curves; the diffusion prior also gets the
reverse process as a strip and an animated GIF at the end.
"""
import math
import os

import torch
from tqdm import tqdm

import config
from models.prior import prior_class, priors_with, registered
from pipeline import cli, devices, distributed, figures, sampling, settings, token_cache, training
from pipeline.checkpoint import build_prior, dataset_of, default_path, load_vqvae, tokenizer_path
from pipeline.errors import CheckpointError
from pipeline.files import run_in_progress
from pipeline.training_run import TrainingRun, launch


def make_optimizer(model, tc):
    """AdamW with weight decay on matrices only (not on biases, norms or embeddings), as in GPT-2 / nanoGPT."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # VAR's tokenizer copy is frozen
    decay = [p for n, p in params if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "emb" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.95))


@torch.no_grad()
def validation_loss(model, tokens_NL, labels_N, device, dtype, batch_size=1000, seed=0):
    """The prior's training loss on held-out tokens, class-conditional: for the GPT and VAR the exact cross-entropy
    per token (nats); for diffusion the denoising loss, with its noise drawn from a fixed seed."""
    model.eval()
    total = 0.0
    with devices.forked_rng(device):
        torch.manual_seed(seed)
        for i in range(0, len(tokens_NL), batch_size):
            tokens, labels = tokens_NL[i:i + batch_size].to(device), labels_N[i:i + batch_size].to(device)
            with devices.autocast(device, dtype):
                total += model.loss(tokens, labels).item() * len(tokens)
    return total / len(tokens_NL)


def train_epoch(run, model, tokens_NL, labels_N, epoch):
    """One pass over the tokens. Under torchrun each process takes its shard of every global batch, after the
    class dropout drawn for the whole batch, so the draws match a single process."""
    model.train()
    rng = run.epoch_rng(epoch)
    batches = run.batches(len(tokens_NL), rng)
    total = 0.0
    bar = tqdm(batches, desc=f"{model.name} epoch {epoch}/{run.tc.epochs}", leave=False,
               disable=distributed.progress_off())
    for batch in bar:
        labels = model.drop_classes(labels_N[batch], rng)
        mine = distributed.shard(torch.arange(len(batch)))
        tokens, labels = tokens_NL[batch[mine]].to(run.device), labels[mine]
        run.set_lr(run.tc.warmup_steps, run.tc.min_lr_ratio)
        with devices.autocast(run.device, run.dtype):
            loss = run.loss_fn(tokens, labels.to(run.device))
        loss_value = run.loss_value(loss, epoch)
        run.backward(loss)
        run.optimizer_step(grad_clip=run.tc.grad_clip)
        total += loss_value
        bar.set_postfix(loss=f"{loss_value:.3f}")
    return total / len(batches)


def save_sample_grid(model, vqvae, cfg, names, device, dtype, path, seed):
    """One row per class (names: the dataset's class names) at the prior's sampling temperature and guidance, from a
    fixed seed so grids of different epochs compare."""
    classes = torch.arange(len(names)).repeat_interleave(cfg.sample.per_class)
    temperature, guidance = settings.sampling_settings(cfg, model)
    images = sampling.draw_images(model, vqvae, classes, device, dtype, temperature=temperature, guidance=guidance, seed=seed)
    figures.save_image_grid(images, path, nrow=cfg.sample.per_class, row_names=names)


def command_line():
    """The script's flags (README's and docs' commands are parsed with it in the tests)."""
    parser = cli.make_training_parser("Train a token prior (raster GPT, VAR or discrete diffusion) on VQ-VAE tokens.")
    parser.add_argument("--prior", default="gpt", choices=list(registered()),
                        help="which prior to train (default: gpt)")
    parser.add_argument("--vqvae", default=None, type=cli.user_path, help="tokenizer checkpoint (default: checkpoints/vqvae.pt, "
                                                      "or vqvae_multiscale.pt for --prior var)")
    return parser


def main(argv=None):
    args, cfg = cli.parse_config(command_line(), argv)
    launch(cfg, lambda: train(cfg, args.prior, resume=args.resume, vqvae_path=args.vqvae, overwrite=args.overwrite))


def check_tokenizer(prior_cls, vqvae, vqvae_path, dataset, preset=None):
    """A prior reads either the single-scale grid or the multi-scale residual tokenizer's sequence, as it declares."""
    if prior_cls.multiscale_tokenizer == vqvae.multiscale:
        return
    scale = {True: "multi-scale", False: "single-scale"}
    preset = settings.tokenizer_preset(dataset, prior_cls.multiscale_tokenizer, preset)
    preset = f" --preset {preset}" if preset else ""
    readers = priors_with(lambda c: c.multiscale_tokenizer == vqvae.multiscale)
    raise CheckpointError(f"{vqvae_path} is a {scale[vqvae.multiscale]} tokenizer, but the {prior_cls.kind} prior "
                          f"needs a {scale[prior_cls.multiscale_tokenizer]} one (python vqvae_train.py{preset}), "
                          f"or train --prior {' or --prior '.join(readers)} on it")


def check_same_images(vqvae_ckpt, vqvae_path, spec):
    """A folder of images that changed since its tokenizer was trained is another dataset: the prior would learn the
    tokens of images the tokenizer never saw, so it refuses (checkpoints from before the key hold the name)."""
    trained_on = vqvae_ckpt.get("data_key", dataset_of(vqvae_ckpt))
    if trained_on != spec.key:
        raise CheckpointError(f"{vqvae_path} was trained on the folder {spec.title} as it was then ({trained_on}); it "
                              f"has changed since ({spec.key}): train the tokenizer again (vqvae_train.py with the "
                              f"same flags and --overwrite), or restore the folder")


def tokenizer_and_tokens(cfg, spec, prior_cls, vqvae_path, device):
    """The tokenizer (checked to suit the prior), its fingerprint, and the dataset's (tokens_NL, labels_N) for
    training and validation, encoded once and cached."""
    holder = run_in_progress(vqvae_path)
    if holder:  # its checkpoint is an epoch's snapshot: the prior would learn the tokens of a tokenizer that moves on
        raise CheckpointError(f"{vqvae_path} is still being trained ({holder}); train the prior once "
                              f"vqvae_train.py has finished")
    vqvae, vqvae_ckpt = load_vqvae(vqvae_path, device, dataset=cfg.data.dataset, preset=cfg.preset)
    check_tokenizer(prior_cls, vqvae, vqvae_path, cfg.data.dataset, cfg.preset)
    check_same_images(vqvae_ckpt, vqvae_path, spec)
    tokenizer_id = vqvae_ckpt["tokenizer_id"]
    with distributed.main_first():  # rank 0 encodes and caches; the others then read the cache
        tokens = token_cache.load_or_build_tokens(cfg.data, tokenizer_id, vqvae.encode_sequence)
    return (vqvae, tokenizer_id, (tokens["train"][0].flatten(1), tokens["train"][1]),
            (tokens["test"][0].flatten(1), tokens["test"][1]))


def save_epoch_figures(model, vqvae, cfg, class_names, device, dtype, epoch, history, results_dir, name):
    """The epoch's sample grid (every `sample_every` epochs and the last) and the loss curves."""
    tc = getattr(cfg, f"{model.kind}_train")
    if epoch % tc.sample_every == 0 or epoch == tc.epochs:
        save_sample_grid(model, vqvae, cfg, class_names, device, dtype, os.path.join(results_dir, f"samples_epoch{epoch:03d}.png"),
                         cfg.seed)
    loss = "cross-entropy" if model.exact_likelihood else "denoising loss"
    figures.plot_curves(history, ("train_loss", "val_loss"), os.path.join(results_dir, "loss.png"),
                        f"{name} {loss} (nats per token)")


def train(cfg, kind="gpt", resume=False, vqvae_path=None, overwrite=False):
    """Train (or continue) a prior of a registered kind."""
    prior_cls = prior_class(kind)
    if kind not in config.prior_sections(cfg):
        raise CheckpointError(f"the {kind} prior has no config section; add `{kind}` and `{kind}_train` to config.Config")
    name = prior_cls.checkpoint_name(getattr(cfg, kind))
    results_dir = os.path.join(cfg.results_dir, prior_cls.results_folder or name)
    with TrainingRun(cfg, kind, default_path(cfg, name), results_dir, resume, overwrite) as run:
        device, dtype = run.device, run.dtype
        vqvae_path = vqvae_path or tokenizer_path(cfg, multiscale=prior_cls.multiscale_tokenizer)
        vqvae, tokenizer_id, (train_tokens, train_labels), (test_tokens, test_labels) = \
            tokenizer_and_tokens(cfg, run.spec, prior_cls, vqvae_path, device)
        run.run_config["tokenizer_id"] = tokenizer_id
        model = build_prior(kind, settings.to_dict(getattr(cfg, kind)), vqvae.token_info(), vqvae).to(device)
        if not run.begin(model, make_optimizer(model, run.tc), len(train_tokens)):
            return
        print(f"{kind}: sequence of {model.L} tokens, {training.count_parameters(model, trainable=True) / 1e6:.2f}M "
              f"trainable parameters, tokenizer {tokenizer_id}; {devices.in_words(device, dtype)}")
        for epoch in run.epochs():
            with run.timed():
                train_loss = train_epoch(run, model, train_tokens, train_labels, epoch)
            if not run.rank0_writes():
                continue
            val_loss = validation_loss(model, test_tokens, test_labels, device, dtype, seed=cfg.seed)
            run.save(epoch, {"train_loss": train_loss, "val_loss": val_loss,
                             "val_bits_per_token": val_loss / math.log(2)}, model.cfg,
                     **vqvae.token_info(), tokenizer_id=tokenizer_id, vqvae_path=vqvae_path)
            figure = f"= {val_loss / math.log(2):.3f} bits/token" if prior_cls.exact_likelihood else "(denoising loss)"
            print(f"epoch {epoch}: train loss {train_loss:.4f}  val loss {val_loss:.4f} nats {figure}  "
                  f"({run.elapsed:.0f}s)")
            run.draw(lambda: save_epoch_figures(model, vqvae, cfg, run.spec.class_names, device, dtype, epoch,
                                                run.history, run.results_dir, name))
        if prior_cls.reverse_process and distributed.is_main():
            names = run.spec.class_names
            frames = sampling.reverse_process_frames(model, vqvae, torch.arange(len(names)), device, dtype, cfg.seed)
            figures.save_reverse_process(frames, names, os.path.join(run.results_dir, "reverse_process"))
        print(f"checkpoint: {run.ckpt_path}\nsamples and curves: {run.results_dir}/")


if __name__ == "__main__":
    main()
