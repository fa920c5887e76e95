"""Writing files so that nothing is lost or half-written: atomic writes, stale temp files, one line on a full or
read-only disk, and the lock that keeps two runs from training into the same checkpoint.

Every file the repo writes (checkpoints, PNGs, GIFs, npz samples, the token cache, RESULTS.md) goes through
`atomic_write`: the bytes go to `NAME.tmpPID<suffix>` in the same folder, then one rename puts them in place, so a
kill at any moment leaves either the old file or the new one. A kill -9 cannot clean up its temp file; the next
write of the same file removes temp files whose process is gone.
"""
import errno
import glob
import io
import os
import pickle
import re
import socket

import torch
from pipeline.errors import CheckpointError, WriteError


def temp_path(path):
    """NAME.tmpPID<suffix>: the suffix is kept so writers that add one (numpy's .npz) write exactly this name."""
    root, suffix = os.path.splitext(path)
    return f"{root}.tmp{os.getpid()}{suffix}"


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(path):
    """Delete temp files of `path` left by processes that no longer run (a kill -9 mid-write)."""
    root, suffix = os.path.splitext(path)
    pattern = re.compile(re.escape(os.path.basename(root)) + r"\.tmp(\d+)" + re.escape(suffix) + "$")
    for candidate in glob.glob(f"{glob.escape(root)}.tmp*{glob.escape(suffix)}"):
        match = pattern.match(os.path.basename(candidate))
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            try:
                os.remove(candidate)
            except OSError:
                pass


def describe_os_error(e, path):
    """One line naming the folder and what to do about it."""
    folder = os.path.dirname(os.path.abspath(path))
    if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return (f"cannot write {path}: the disk holding {folder} is full ({e.strerror}); free space there or write "
                f"elsewhere")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {folder} is not writable ({e.strerror}); choose a writable folder"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot write {path}: part of {folder} is a file, not a folder; choose another path"
    return f"cannot write {path} ({e.strerror or type(e).__name__}); check the folder {folder}"


def make_folder(path):
    """The folder a file will go into, or a WriteError saying why it cannot be made."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise WriteError(describe_os_error(e, path)) from None


def ensure_folder(folder):
    """Make an output folder before any work, so a bad --out or results_dir fails in the first second, not after an
    epoch of training."""
    make_folder(os.path.join(folder, "any file"))


def missing_folders(*folders):
    """The folders (and their parents) that do not exist yet, deepest first: what a run makes and, should it fail
    before writing anything into them, takes away again (remove_empty_folders)."""
    missing = []
    for folder in folders:
        folder = os.path.abspath(folder)
        while folder and not os.path.exists(folder) and folder not in missing:
            missing.append(folder)
            folder = os.path.dirname(folder)
    return sorted(missing, key=len, reverse=True)


def remove_file(path):
    try:
        os.remove(path)
    except OSError:
        pass  # gone already, or never made


def remove_empty_folders(folders):
    """Remove each folder that is empty (deepest first); a folder something was written into stays."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty, or gone already


def atomic_write(path, write):
    """write(temp_path) writes the file; then it replaces `path` in one rename. On any OS error the old file is kept,
    the temp file removed, and a WriteError names the folder."""
    make_folder(path)
    remove_stale_temps(path)
    tmp_path = temp_path(path)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except OSError as e:
        raise WriteError(describe_os_error(e, path)) from None
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


class RunLock:
    """Only one training run per checkpoint: an flock on CHECKPOINT.lock, held for the run's lifetime. The kernel
    drops it when the process ends, however it ends, so a crashed or killed run never leaves it stuck."""

    def __init__(self, checkpoint_path, enabled=True):
        self.path = f"{checkpoint_path}.lock"
        self.handle = None
        self.enabled = enabled  # under torchrun only rank 0, the process that writes, takes the lock

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not locked there
            return self
        if not self.enabled:
            return self
        make_folder(self.path)
        try:
            self.handle = open(self.path, "a+")
        except OSError as e:
            raise WriteError(describe_os_error(e, self.path)) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise WriteError(f"another run ({holder}) is training into {self.path[:-5]}; wait for it to finish, "
                             f"or train elsewhere with --set checkpoint_dir=DIR") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()  # releases the flock; the file stays (removing it would race a waiting run)
        return False


def run_in_progress(checkpoint_path):
    """Who is training into checkpoint_path right now (the text its RunLock holds), or None."""
    try:
        import fcntl
    except ImportError:  # Windows: runs are not locked there
        return None
    try:
        handle = open(f"{checkpoint_path}.lock")
    except OSError:  # no lock file: no run has trained there, or it cannot be read
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


# --- torch files: saved atomically, loaded as data ---------------------------------------------------------------


def atomic_save(obj, path):
    """Write to a temp file in the same folder, then rename: a kill mid-save leaves the old file intact, and a full
    or read-only disk a one-line WriteError. The bytes are built in memory first because torch.save reports a
    failed write as an opaque RuntimeError, while a plain file write raises the OSError that says why."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)

    def write(tmp_path):
        with open(tmp_path, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty "new" file

    atomic_write(path, write)


def load_file(path, what="checkpoint", hint="",
              remedy="give a file written by this repo's scripts (a damaged one of ours: train it again)"):
    if not os.path.exists(path):
        raise CheckpointError(f"no {what} at {path}{hint}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder, not a {what} file; give the path of the .pt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{what} {path} is unreadable ({unreadable_reason(e, path)}); {remedy}") from None


def unreadable_reason(e, path):
    """Why torch.load failed, in a few words. Its messages are long: a file that is not a torch file at all (random
    bytes, a text file) is said to be so, instead of quoting the weights_only advice torch appends."""
    text = str(e).strip()
    if isinstance(e, EOFError) or not text or os.path.getsize(path) == 0:
        return "the file is empty or cut short"
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):  # a zip archive, or a legacy pickle
        return "not a PyTorch file"
    if "weights_only" in text and ("Unsupported global" in text or "GLOBAL" in text):
        return "it holds pickled code, which is never run"
    if isinstance(e, pickle.UnpicklingError) or "invalid load key" in text or "zip archive" in text:
        return "not a PyTorch file, or a damaged one"
    first = text.splitlines()[0]
    return first if len(first) <= 120 else first[:first.rfind(" ", 0, 120)] + " ..."
