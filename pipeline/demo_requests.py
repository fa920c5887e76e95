"""The values of a request to demo.py's page, checked as generator.py checks its flags: each bad value is a
one-line UserError (the page shows its text), before any model runs. Sizes are bounded, so no request can ask for
hours of work; an image, drawn or uploaded, must be a picture of the model's own size."""
import base64
import binascii
import io
import math
from types import SimpleNamespace

import torch
from PIL import Image, UnidentifiedImageError

from pipeline import data, sampling
from pipeline.errors import DataError, FlagError
from pipeline.sampling import EDITS

MAX_PER_CLASS = 100    # samples per class row (a 10 x 100 grid at most)
MAX_SAMPLES = 1000     # samples in one request, all rows together
MAX_WATCHED = 100      # samples watched at once (each frame is a grid of them)
MAX_RESULTS = 16       # results of one edit
MAX_STEPS = 1000       # reverse steps
MAX_SEED = 2 ** 32     # numpy's range, as config.seed
ALL, NONE = "all", "none"  # the class choices besides a class name: one row per class, or unconditional


def one_line(text, limit=80):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def number(values, name, kind, label=None):
    """values[name] as an int or a float (None when absent or empty); anything else is one line."""
    label = label or sampling.flag(name)
    raw = values.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    bad = FlagError(f"{label} must be {'a whole number' if kind is int else 'a number'} (got {one_line(raw)!r})")
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise bad
    try:
        value = raw if isinstance(raw, int) else float(raw)
    except (ValueError, OverflowError):
        raise bad from None
    if kind is float:
        return float(value)
    if isinstance(value, float):
        if not (math.isfinite(value) and value == int(value)):
            raise bad
        value = int(value)
    return value


def sampling_values(values, loaded, results=False):
    """temperature, guidance, top_k, steps, seed and n of a request, each checked as generator.py checks its flag
    (the shared check_sampling_flags and check_steps) and bounded; absent ones take the model's defaults.
    results=True: n is the number of results of an edit."""
    prior, defaults = loaded.prior, loaded.defaults()
    args = SimpleNamespace(temperature=number(values, "temperature", float),
                           cfg=number(values, "guidance", float, "--cfg (guidance)"),
                           top_k=number(values, "top_k", int), steps=number(values, "steps", int),
                           n=number(values, "n", int, "the number of results" if results else
                                    "the number of samples"),
                           seed=number(values, "seed", int, "--seed"))
    n = args.n
    args.n = None  # checked below with its own bounds and words
    sampling.check_sampling_flags(args)
    sampling.check_steps(prior, args.steps)
    if args.steps is not None and args.steps > MAX_STEPS:
        raise FlagError(f"--steps must be at most {MAX_STEPS} here (got {args.steps})")
    if args.seed is not None and not 0 <= args.seed < MAX_SEED:
        raise FlagError(f"--seed must be in [0, 2**32 - 1] (got {args.seed})")
    most = MAX_RESULTS if results else MAX_PER_CLASS
    what = "results" if results else "samples per row"
    if n is not None and not 1 <= n <= most:
        raise FlagError(f"the number of {what} must be from 1 to {most} (got {n})")
    return SimpleNamespace(
        temperature=defaults["temperature"] if args.temperature is None else args.temperature,
        guidance=defaults["guidance"] if args.cfg is None else args.cfg,
        top_k=defaults["top_k"] if args.top_k is None else args.top_k,
        steps=args.steps, seed=defaults["seed"] if args.seed is None else args.seed,
        n=defaults["n"] if n is None else n,
        given={name for name in ("temperature", "guidance", "top_k", "steps") if values.get(name) not in (None, "")})


def classes(values, loaded, per_row, most=MAX_SAMPLES):
    """(class ids in grid order, row names or None, the choice): `all` draws one row of per_row samples per
    class, in generator.py's grid order; `none` as many with the "no class" token; a class name one row of it.
    At most `most` samples in all."""
    choice = values.get("class", ALL)
    names, prior = loaded.class_names, loaded.prior
    if not isinstance(choice, str):
        raise FlagError(f"the class must be a class name, {ALL} or {NONE} (got {one_line(choice)!r})")
    if choice in (ALL, NONE):
        if len(names) * per_row > most:
            raise FlagError(f"{len(names)} classes x {per_row} samples is more than {most} samples; "
                            f"ask for at most {max(1, most // len(names))} per row")
        ids, _ = sampling.class_ids(len(names) * per_row, prior, choice == NONE)
        if choice == NONE:
            return ids, None, choice
        return ids.view(per_row, len(names)).t().flatten(), list(names), choice  # row r = class r
    if per_row > most:
        raise FlagError(f"{per_row} samples is more than {most}; ask for fewer")
    if choice not in names:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise FlagError(f"{one_line(choice)!r} is not a class of this model ({shown}; or {ALL} or {NONE})")
    return torch.full((per_row,), names.index(choice)), [choice], choice


def edit_kind(values, prior):
    """The edit asked for, which the prior must be able to do (its `edits` capability)."""
    edit = values.get("edit")
    if edit not in EDITS:
        raise FlagError(f"the edit must be one of {', '.join(EDITS)} (got {one_line(edit)!r})")
    sampling.check_edit(prior, edit)
    return edit


def source(values):
    """Where an edit's picture comes from: the test split (`test`, with an `index`) or the request (`picture`)."""
    given = values.get("source", "test")
    if given not in ("test", "picture"):
        raise FlagError(f"the picture's source must be test or picture (got {one_line(given)!r})")
    return given


def test_image(values, loaded):
    """(uint8 C x H x W, its class id) of the test split's image values['index'] (generator.py --edit's images)."""
    images, labels = loaded.test_images()
    index = number(values, "index", int, "the test image number")
    if index is None or not 0 <= index < len(images):
        raise FlagError(f"the test image number must be from 0 to {len(images) - 1} (got {index})")
    return images[index], int(labels[index])


def picture(text, shape):
    """A drawn or uploaded picture, given as a data URL (data:image/...;base64,...) or plain base64, as uint8
    C x H x W of the model's image shape: grey for a grey model, RGB (composited over white) for a colour one. A
    picture of another size, or bytes that are no picture, are one line."""
    channels, height, width = shape
    if not isinstance(text, str) or not text:
        raise DataError("no picture was given; draw one or upload a file")
    encoded = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("the picture could not be read (its data is not base64); upload a PNG or JPEG file") \
            from None
    try:
        image = Image.open(io.BytesIO(raw))
        size = image.size
        if size != (width, height):
            raise DataError(f"the picture is {size[0]}x{size[1]} pixels; this model's images are {width}x{height} "
                            f"(draw on the canvas, or upload a {width}x{height} picture)")
        image.load()
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError("the picture claims billions of pixels; upload a small picture") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = one_line(e) if not isinstance(e, UnidentifiedImageError) else "not a picture file"
        raise DataError(f"the picture could not be read ({reason}); upload a PNG or JPEG file") from None
    if image.mode in ("RGBA", "LA", "P", "PA") and channels == 3:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, channels).permute(2, 0, 1).contiguous()


def region(values, shape, grid_size):
    """The painted region: values['mask'], one 0/1 per pixel, row by row (H*W of them), as the cells of the token
    grid it touches ((grid, grid) bool): a cell is re-drawn when any of its pixels is painted."""
    _, height, width = shape
    mask = values.get("mask")
    if not isinstance(mask, list) or len(mask) != height * width \
            or not all(isinstance(v, (int, float)) and v in (0, 1) for v in mask):
        raise FlagError(f"the painted region must be {height}x{width} values of 0 or 1; paint it on the picture")
    pixels = torch.tensor([float(v) for v in mask]).view(1, 1, height, width)
    cells = torch.nn.functional.adaptive_max_pool2d(pixels, grid_size)[0, 0] > 0
    if not cells.any():
        raise FlagError("nothing is painted; paint the region to re-draw with the brush")
    return cells


def to_model_range(image_CHW):
    """uint8 C x H x W -> the (1, C, H, W) float batch in [-1, 1] the tokenizer reads."""
    return data.to_model_range(image_CHW[None])
