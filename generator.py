"""Draw digits from trained checkpoints; needs nothing but checkpoints/gpt.pt and the VQ-VAE it was trained on.

    python generator.py                                   # temperature sweep grids, one row per digit
    python generator.py --temperature 0.75 --top-k 50     # one grid
    python generator.py --n 10000 --save samples.npz      # N samples for evaluation (classes cycle 0..9)
    python generator.py --unconditional                   # ignore classes ("no class" token)

The npz holds `images` (uint8, N x 1 x 28 x 28, 0 = black) and `labels` (int64, the digit each sample was
conditioned on, or -1 when unconditional).
"""
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import config
import data
import training
from checkpoint import CheckpointError, default_path, load_pair
from models import device as devices
from models.gpt import sequence_to_grid


@torch.no_grad()
def draw_images(prior, vqvae, classes_N, device, dtype, temperature=1.0, top_k=0, cfg_scale=1.0, batch_size=1000,
                seed=0, use_cache=True, progress=False):
    """Sample token grids for the given class ids and decode them: images in [-1, 1], (N, 1, 28, 28), on the CPU."""
    was_training = prior.training
    prior.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for i in tqdm(range(0, len(classes_N), batch_size), desc="sampling", disable=not progress, leave=False):
        classes = classes_N[i:i + batch_size].to(device)
        with devices.autocast(device, dtype):
            tokens_BL = prior.sample(classes, temperature, top_k, cfg_scale, use_cache=use_cache, generator=generator)
            images = vqvae.decode(sequence_to_grid(tokens_BL, prior.grid_shape))
        chunks.append(images.float().clamp(-1, 1).cpu())
    prior.train(was_training)
    return torch.cat(chunks)


def class_ids(n, prior, unconditional):
    """Classes cycling 0..9 (or all "no class"), and the labels to record for them (-1 = none)."""
    cycle = torch.arange(n) % prior.cfg.num_classes
    if unconditional:
        return torch.full((n,), prior.no_class), torch.full((n,), -1)
    return cycle, cycle


def save_npz(path, images_N1HW, labels_N):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp{os.getpid()}.npz"
    np.savez_compressed(tmp_path, images=data.to_uint8(images_N1HW).numpy(), labels=labels_N.numpy().astype(np.int64))
    os.replace(tmp_path, path)


def main(argv=None):
    parser = config.make_parser("Draw samples from a trained prior + VQ-VAE.")
    parser.add_argument("--prior", default=None, help="prior checkpoint (default: checkpoints/gpt.pt)")
    parser.add_argument("--vqvae", default=None, help="tokenizer checkpoint (default: checkpoints/vqvae.pt)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="one temperature (default: the sweep in config.sample.temperatures for grids, "
                             "config.sample.temperature for --save)")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely codes (0 = all)")
    parser.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--unconditional", action="store_true", help='draw with the "no class" token')
    parser.add_argument("--n", type=int, default=None, help="number of samples for --save")
    parser.add_argument("--save", default=None, metavar="FILE.npz", help="write N samples to an npz")
    parser.add_argument("--batch-size", type=int, default=None, help="samples drawn at once")
    parser.add_argument("--no-kv-cache", action="store_true", help="recompute the prefix every step (slow)")
    parser.add_argument("--out", default=None, help="folder for grids (default: _results/generator)")
    args, cfg = config.parse_config(parser, argv)
    for name in ("temperature", "top_k", "cfg"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (value == 0 and name != "top_k")):
            sys.exit(f"error: --{name.replace('_', '-')} must be positive (got {value})")
    if args.n is not None and args.n < 1:
        sys.exit(f"error: --n must be at least 1 (got {args.n})")
    try:
        generate(cfg, args)
    except CheckpointError as e:
        sys.exit(f"error: {e}")


def generate(cfg, args):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    prior, vqvae, _ = load_pair(args.prior or default_path(cfg, "gpt"), args.vqvae or default_path(cfg, "vqvae"), device)
    top_k = cfg.sample.top_k if args.top_k is None else args.top_k
    cfg_scale = cfg.sample.cfg_scale if args.cfg is None else args.cfg
    batch_size = args.batch_size or cfg.sample.batch_size
    options = dict(top_k=top_k, cfg_scale=cfg_scale, batch_size=batch_size, seed=cfg.seed,
                   use_cache=not args.no_kv_cache)
    print(devices.describe(device, dtype))

    if args.save:
        n = args.n or 10_000
        temperature = cfg.sample.temperature if args.temperature is None else args.temperature
        classes, labels = class_ids(n, prior, args.unconditional)
        t0 = time.time()
        images = draw_images(prior, vqvae, classes, device, dtype, temperature, progress=True, **options)
        seconds = time.time() - t0
        save_npz(args.save, images, labels)
        print(f"{n} samples at temperature {temperature} in {seconds:.1f}s ({n / seconds:.0f} images/s) -> {args.save}")
        return

    out_dir = args.out or os.path.join(cfg.results_dir, "generator")
    temperatures = cfg.sample.temperatures if args.temperature is None else (args.temperature,)
    per_class = cfg.sample.per_class
    classes, _ = class_ids(10 * per_class, prior, args.unconditional)
    classes = classes.view(per_class, 10).t().flatten() if not args.unconditional else classes  # row r = digit r
    for temperature in temperatures:
        t0 = time.time()
        images = draw_images(prior, vqvae, classes, device, dtype, temperature, **options)
        seconds = time.time() - t0
        tag = "uncond_" if args.unconditional else ""
        path = os.path.join(out_dir, f"{tag}temperature_{temperature:.2f}.png")
        training.save_image_grid(images, path, nrow=per_class)
        print(f"temperature {temperature:.2f}: {len(classes)} samples in {seconds:.2f}s -> {path}")


if __name__ == "__main__":
    main()
