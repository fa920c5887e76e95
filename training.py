"""What both training stages share: the learning-rate schedule, resuming, figures, and run bookkeeping."""
import math
import os

import torch

import config as config_module
from checkpoint import CheckpointError, load_checkpoint


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


def resume_state(path, kind, run_config):
    """The checkpoint to continue from, after checking it was made with the same config."""
    ckpt = load_checkpoint(path, kind, hint="; nothing to resume, drop --resume")
    if ckpt.get("run_config") != run_config:
        changed = sorted(k for k in set(run_config) | set(ckpt.get("run_config", {}))
                         if run_config.get(k) != ckpt.get("run_config", {}).get(k))
        raise CheckpointError(f"{path} was trained with another config (differs in: {', '.join(changed)}); "
                              f"resume with the same --preset/--set flags or drop --resume")
    return ckpt


def run_config(cfg, *sections):
    """The config sections that define a run, as plain dicts (what --resume compares)."""
    return {name: config_module.to_dict(getattr(cfg, name)) for name in sections}


def grid_picture(images_BCHW, nrow, row_names=None):
    """Images in [-1, 1] (grey or RGB) -> a PIL image of the grid (0 = black), thin grey lines between images; with
    row_names, each row's name stands to its left (the class of a row of samples)."""
    from PIL import Image
    from torchvision.utils import make_grid
    grid = make_grid(images_BCHW.float().clamp(-1, 1).add(1).div(2), nrow=nrow, padding=2, pad_value=0.5)
    # the rounding of torchvision's save_image, so grids stay byte-identical to what it wrote
    picture = Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy())
    return picture if row_names is None else with_row_names(picture, row_names, images_BCHW.shape[-2] + 2)


def with_row_names(picture, names, row_height, pad=2):
    """The picture with a white margin on its left holding one name per row of tiles."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=11)
    draw = ImageDraw.Draw(picture)
    width = max(int(draw.textlength(name, font=font)) for name in names) + 8
    canvas = Image.new("RGB", (picture.width + width, picture.height), "white")
    canvas.paste(picture, (width, 0))
    draw = ImageDraw.Draw(canvas)
    for row, name in enumerate(names):
        draw.text((width - 4, pad + row * row_height + row_height // 2), name, fill="black", font=font, anchor="rm")
    return canvas


def save_image_grid(images_BCHW, path, nrow, row_names=None):
    """Images in [-1, 1] -> one PNG grid (see grid_picture), written atomically."""
    save_picture(grid_picture(images_BCHW, nrow, row_names), path)


def save_picture(picture, path, **options):
    """A PIL image to PNG (or GIF, by the path's suffix), through a temp file and a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, suffix = os.path.splitext(path)
    tmp_path = f"{root}.tmp{os.getpid()}{suffix}"
    try:
        picture.save(tmp_path, **options)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def plot_curves(history, keys, path, title, ylabel="loss"):
    """A PNG of per-epoch curves, e.g. keys=('train_loss', 'val_loss')."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    epochs = [row["epoch"] for row in history]
    for key in keys:
        ax.plot(epochs, [row[key] for row in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path):
    """Lay out a matplotlib figure, write it as a PNG (making the folder) and free it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def count_parameters(model, trainable=False):
    """All parameters, or only those that train (VAR holds a frozen copy of its tokenizer's quantizer)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def epoch_generator(seed, epoch):
    """The shuffling RNG of one epoch: the same for a fresh run and a resumed one."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)
