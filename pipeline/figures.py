"""The pictures a person looks at: sample grids with each row's class name, reverse-process strips and GIFs, loss
curves and sweep plots. Every file goes through files.atomic_write."""
import os

import torch
from PIL import Image, ImageDraw, ImageFont

from pipeline.files import atomic_write


def pyplot():
    """matplotlib's pyplot on its file-only backend, imported on first use: it costs a second at the start of every
    script, most of which draw no curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def grid_picture(images_BCHW, nrow, row_names=None):
    """Images in [-1, 1] (grey or RGB) -> a PIL image of the grid (0 = black), thin grey lines between images; with
    row_names, each row's name stands to its left (the class of a row of samples)."""
    from torchvision.utils import make_grid  # on first use, like pyplot
    grid = make_grid(images_BCHW.float().clamp(-1, 1).add(1).div(2), nrow=nrow, padding=2, pad_value=0.5)
    # the rounding of torchvision's save_image, so grids stay byte-identical to what it wrote
    picture = Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy())
    return picture if row_names is None else with_row_names(picture, row_names, images_BCHW.shape[-2] + 2)


def name_font(names, size=11):
    """(font, names) to draw row names with: Pillow's built-in font for ASCII names, as grids always were;
    matplotlib's DejaVu Sans (Latin, Greek, Cyrillic and more) for names beyond ASCII, which the built-in font
    draws as boxes; a character neither has is drawn as '?', still not a box."""
    if all(name.isascii() for name in names):
        return ImageFont.load_default(size=size), list(names)
    import matplotlib
    from matplotlib.ft2font import FT2Font
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    covered = set(FT2Font(path).get_charmap())
    return ImageFont.truetype(path, size), ["".join(c if ord(c) in covered else "?" for c in name) for name in names]


def with_row_names(picture, names, row_height, pad=2):
    """The picture with a white margin on its left holding one name per row of tiles."""
    font, names = name_font(names)
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
    atomic_write(path, lambda tmp_path: picture.save(tmp_path, **options))


def plot_curves(history, keys, path, title, ylabel="loss"):
    """A PNG of per-epoch curves, e.g. keys=('train_loss', 'val_loss')."""
    fig, ax = pyplot().subplots(figsize=(5, 3.5), dpi=120)
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
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp_path: fig.savefig(tmp_path, format="png"))
    finally:
        pyplot().close(fig)


def save_reverse_process(frames, names, path_prefix):
    """PATH_strip.png (one row per class, one column per reverse step) and PATH.gif (the same, animated), from
    sampling.reverse_process_frames: one image batch per step, one image per named class."""
    strip = torch.stack(frames, dim=1).flatten(0, 1)  # row = class, column = step
    save_image_grid(strip, f"{path_prefix}_strip.png", nrow=len(frames), row_names=names)
    pictures = []
    for frame in frames + [frames[-1]] * 3:  # hold the final images a moment before the loop restarts
        picture = grid_picture(frame, nrow=len(names))
        pictures.append(picture.resize((picture.width * 3, picture.height * 3), Image.NEAREST))
    save_picture(pictures[0], f"{path_prefix}.gif", save_all=True, append_images=pictures[1:], duration=250, loop=0)
    return f"{path_prefix}_strip.png", f"{path_prefix}.gif"


def plot_sweep(rows, path):
    """FID, precision, recall and class accuracy against the sampling temperature (benchmark.py --sweep)."""
    temps = [r["temperature"] for r in rows]
    fig, (ax_fid, ax_pr) = pyplot().subplots(1, 2, figsize=(9, 3.5), dpi=120)
    ax_fid.plot(temps, [r["fid"] for r in rows], marker="o")
    ax_fid.set(xlabel="temperature", ylabel="classifier-FID (lower is better)", title="FID vs temperature")
    for key in ("precision", "recall", "accuracy"):
        ax_pr.plot(temps, [r[key] for r in rows], marker="o", label=key)
    ax_pr.set(xlabel="temperature", title="precision / recall / class accuracy")
    for ax in (ax_fid, ax_pr):
        ax.grid(alpha=0.3)
    ax_pr.legend()
    save_figure(fig, path)
