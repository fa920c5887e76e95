"""A folder of images as a dataset, the way torchvision's ImageFolder reads one: `PATH/<class>/*.png` (class
subfolders, named by their folder; images may sit deeper inside a class folder) or images directly in PATH (one
class, an unconditional model).

Every image goes through the same steps, so a folder of mixed files trains as one dataset:
  first frame (an animated GIF's first), turned upright by its EXIF orientation (as every photo viewer shows a
  phone's picture), 16-bit grey scaled to 8 bits (by its type, never by its own brightest pixel), any transparency (RGBA, LA, a palette with a
  transparent colour) composited over `background`, then RGB (CMYK, YCbCr and palettes converted) or grey
  (channels=1), a centre crop to a square, and an antialiased (Lanczos) resize to image_size x image_size; smaller
  images are enlarged the same way.
Files whose extension Pillow does not read are ignored (a README, .DS_Store), and so are the folders NAS systems fill
with thumbnails of every image (@eaDir, ...), which would put near-copies on both sides of the split; a file with an image extension that
cannot be decoded stops the run and is named: skipping it would train on another dataset than the folder shows.

The split is fixed by file names: in sorted order of relative paths, every tenth image (the 10th, 20th, ...) is
validation, the same on every machine. Each split is then kept in an order fixed by a hash of the file names, so that
its first N images are a fair sample of every class. The decoded images are cached once per folder as one uint8 tensor file keyed
by the folder's contents (every file's relative path, size and modification time) and the preprocessing settings,
so an epoch never re-reads the files and a changed folder is decoded again.
"""
import hashlib
import os

import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps

from pipeline.errors import CheckpointError, DataError
from pipeline.files import atomic_save, load_file

MIN_IMAGES = 10          # at least one validation image (every tenth)
VALIDATION_EVERY = 10
CACHE_VERSION = 2        # bump when the preprocessing changes, so old caches are decoded again
# folders NAS systems and file managers fill with thumbnails and deleted files: never images of the dataset
LITTER_FOLDERS = {"@eaDir", "#recycle", "@Recycle", "#snapshot", ".@__thumb", "@__thumb", "$RECYCLE.BIN"}


def image_extensions():
    """The file extensions Pillow can open, lower case with the dot."""
    Image.init()
    return {ext.lower() for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN}


def _images_under(folder, extensions):
    """Relative paths (to `folder`) of the image files below it, sorted; hidden files and folders skipped."""
    found = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in LITTER_FOLDERS)
        found += [os.path.relpath(os.path.join(current, n), folder) for n in names
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in extensions]
    return sorted(found)


def skipped_note(folder, extensions):
    """What a folder holds that is not read as images, by kind, for the message of a folder with too few:
    '; skipped 12 .heic files (a kind Pillow cannot open: convert them to PNG or JPEG)', or ''."""
    kinds = {}
    for current, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in LITTER_FOLDERS]
        for name in names:
            kind = os.path.splitext(name)[1].lower() or "extension-less"
            if not name.startswith(".") and kind not in extensions:
                kinds[kind] = kinds.get(kind, 0) + 1
    if not kinds:
        return ""
    common = sorted(kinds.items(), key=lambda item: -item[1])[:3]
    listed = ", ".join(f"{count} {kind} file{'s' * (count != 1)}" for kind, count in common)
    return f"; skipped {listed}{' and others' if len(kinds) > 3 else ''} (kinds Pillow cannot open: convert them to " \
           f"PNG or JPEG)"


def scan(folder):
    """(class_names, files): files is a sorted list of (path relative to folder, class id). Raises DataError with
    what to do for a folder that is missing, empty, mixed or too small."""
    if not folder:
        raise DataError("data.dataset=folder needs the folder: --set data.folder=PATH")
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise DataError(f"data.folder={folder} {what}; give a folder of images (class subfolders for classes)")
    extensions = image_extensions()
    entries = sorted(e for e in os.listdir(folder) if not e.startswith(".") and e not in LITTER_FOLDERS)
    class_dirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    loose = [e for e in entries if os.path.splitext(e)[1].lower() in extensions
             and os.path.isfile(os.path.join(folder, e))]
    if class_dirs and loose:
        raise DataError(f"{folder} holds both images ({loose[0]}, ...) and class subfolders ({class_dirs[0]}, ...); "
                        f"move the images into a class subfolder, or the subfolders out")
    if not class_dirs:
        files = [(name, 0) for name in loose]
        class_names = (os.path.basename(os.path.abspath(folder)) or "images",)
    else:
        files = []
        for label, name in enumerate(class_dirs):
            inside = _images_under(os.path.join(folder, name), extensions)
            if not inside:
                where = os.path.join(folder, name)
                raise DataError(f"class folder {where} holds no images{skipped_note(where, extensions)}; add some or "
                                f"remove it")
            files += [(os.path.join(name, path), label) for path in inside]
        class_names = tuple(class_dirs)
    dangling = [path for path, _ in files if not os.path.exists(os.path.join(folder, path))]
    if dangling:
        raise DataError(f"{os.path.join(folder, dangling[0])} is a link to a file that does not exist"
                        f"{f' (and {len(dangling) - 1} more)' if len(dangling) > 1 else ''}; remove it or restore "
                        f"its target")
    if len(files) < MIN_IMAGES:
        raise DataError(f"{folder} holds {len(files)} image{'s' * (len(files) != 1)} Pillow can read"
                        f"{skipped_note(folder, extensions)}; a dataset needs at least {MIN_IMAGES} (every tenth is "
                        f"kept for validation)")
    training = {label for i, (_, label) in enumerate(files) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1}
    untrained = [name for label, name in enumerate(class_names) if label not in training]
    if untrained:  # a prior asked for such a class draws what it never saw
        raise DataError(f"class folder {os.path.join(folder, untrained[0])} has no training image (every tenth file, "
                        f"in sorted order, is kept for validation, and it holds only those)"
                        f"{f' (and {len(untrained) - 1} more such classes)' if len(untrained) > 1 else ''}; add "
                        f"images to it or remove it")
    return class_names, files


def content_key(folder, files, settings):
    """12 hex digits naming the folder's contents and the preprocessing settings: equal keys mean equal decoded
    tensors. Each image counts by its relative path, size, modification time, and its inode and change time: a
    file rewritten in place with its old size and modification time put back (os.utime, touch -r, a restore that
    keeps times) still gets a new change time, which no user call can set. Reading every byte of every image each
    run would catch the rest (a disk flipping bits under an unchanged inode), at the price of reading the whole
    folder before every run; the stat fields cost nothing."""
    digest = hashlib.sha256(repr((CACHE_VERSION, settings)).encode())
    for path, label in files:
        stat = os.stat(os.path.join(folder, path))
        digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}\n"
                      .encode())
    return digest.hexdigest()[:12]


def tensors_digest(*tensors):
    """SHA-1 of the tensors' bytes: what a cache stores beside them, and checks when it is read."""
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def background_rgb(background):
    """A colour name or #RRGGBB as an (r, g, b) tuple; a DataError that says what is accepted."""
    try:
        return ImageColor.getrgb(background)[:3]
    except ValueError:
        raise DataError(f"data.background={background!r} is not a colour; give a name (white, black) or #RRGGBB") \
            from None


def to_array(image, image_size, channels, background):
    """One opened PIL image -> uint8 array (channels, image_size, image_size), by the steps in this file's docstring."""
    image.seek(0)  # an animated GIF or APNG: its first frame
    image = ImageOps.exif_transpose(image)  # a phone's photo stored sideways, shown upright
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit or float grey: scale to 8 bits
        values = np.asarray(image, dtype=np.float64)
        # integer grey is 16-bit data (a 16-bit PNG or TIFF opens as I or I;16); float grey is taken as 0..255
        scale = 255.0 / 65535.0 if image.mode != "F" else 1.0
        image = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB" if channels == 3 else "L")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


class UnreadableImage(DataError):
    """An image file that cannot be decoded: its path and the decoder's reason."""
    def __init__(self, path, reason):
        super().__init__(f"cannot read {path} ({reason}); the run stops rather than train on a different set than "
                         f"the folder holds: remove or replace the file and run again")
        self.path, self.reason = path, reason


def decode(path, image_size, channels, background):
    """One image file -> uint8 (C, S, S); UnreadableImage naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes now: a truncated or corrupt file fails here, not halfway through training
            return to_array(image, image_size, channels, background)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UnreadableImage(path, reason) from None


NAMED_FAILURES = 3  # unreadable files named in the one-line error; the rest are counted


def decode_all(paths, image_size, channels, background, progress_desc=None):
    """Every file decoded, or one DataError naming the first few that cannot be (and how many more), so a folder
    with several bad files is fixed in one pass, not one run per file."""
    from tqdm import tqdm
    arrays, failed = [], []
    for path in tqdm(paths, desc=progress_desc, leave=False, disable=None if progress_desc else True):
        try:
            arrays.append(decode(path, image_size, channels, background))
        except UnreadableImage as e:
            failed.append(e)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        named = "; ".join(f"{e.path} ({e.reason})" for e in failed[:NAMED_FAILURES])
        more = f" and {len(failed) - NAMED_FAILURES} more" if len(failed) > NAMED_FAILURES else ""
        raise DataError(f"cannot read {len(failed)} files: {named}{more}; the run stops rather than train on a "
                        f"different set than the folder holds: remove or replace them and run again")
    return arrays


def cache_path(cache_dir, folder, key):
    """cache_dir/<folder name>_<hash of its absolute path>_<content key>.pt"""
    name = os.path.basename(os.path.abspath(folder)) or "images"
    where = hashlib.sha256(os.path.abspath(folder).encode()).hexdigest()[:8]
    return os.path.join(cache_dir, f"{name}_{where}_{key}.pt")


def read_cache(path, key):
    """The cached (images, labels, test mask), or None when there is none or it is damaged or stale."""
    if not os.path.isfile(path):
        return None
    try:
        cached = load_file(path, what="image cache")
        found = cached["images"], cached["labels"], cached["test"]
        if cached.get("key") != key or cached.get("digest") != tensors_digest(*found):
            return None  # stale, or its pixels changed on disk since they were decoded: decoded again
        return found
    except (CheckpointError, AttributeError, KeyError, TypeError):
        return None


def remove_stale_caches(path):
    """Older caches of the same folder (same name and path hash, another content key)."""
    folder, name = os.path.split(path)
    prefix = name.rsplit("_", 1)[0] + "_"
    for other in os.listdir(folder):
        if other.startswith(prefix) and other.endswith(".pt") and other != name:
            try:
                os.remove(os.path.join(folder, other))
            except OSError:
                pass  # another process's, or already gone: it is only a cache


def decoded(folder, cache_dir, image_size, channels, background, progress=True):
    """(images_NCHW uint8, labels_N int64, test_N bool) of every image of the folder, from the cache or decoded now
    and cached."""
    class_names, files = scan(folder)
    rgb = background_rgb(background)
    key = content_key(folder, files, (image_size, channels, rgb))
    path = cache_path(cache_dir, folder, key)
    cached = read_cache(path, key)
    if cached is not None:
        return cached
    arrays = decode_all([os.path.join(folder, rel) for rel, _ in files], image_size, channels, rgb,
                        f"decoding {len(files)} images of {folder}" if progress else None)
    test = torch.arange(len(files)) % VALIDATION_EVERY == VALIDATION_EVERY - 1
    # stored in an order fixed by a hash of each file's name, not by class: the first N of a split (data.train_limit,
    # evaluate.py's real-image rows) are then a fair sample of every class
    order = sorted(range(len(files)), key=lambda i: hashlib.sha1(files[i][0].encode()).hexdigest())
    images = torch.from_numpy(np.stack([arrays[i] for i in order]))
    labels = torch.tensor([files[i][1] for i in order], dtype=torch.long)
    test = test[order]
    atomic_save({"key": key, "images": images, "labels": labels, "test": test, "class_names": class_names,
                 "digest": tensors_digest(images, labels, test)}, path)
    remove_stale_caches(path)
    return images, labels, test


def load_split(folder, cache_dir, image_size, channels, background, train):
    """(images_NCHW uint8, labels_N int64) of the training or the validation split."""
    images, labels, test = decoded(folder, cache_dir, image_size, channels, background)
    keep = ~test if train else test
    return images[keep], labels[keep]
