"""Several processes: torchrun + DistributedDataParallel, the convention of nanoGPT and VAR.

    torchrun --standalone --nproc_per_node=2 vqvae_train.py ...          # 2 processes on this machine
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 transformer_train.py ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them (plain `python script.py`) nothing here does anything,
and a run is exactly the single-process run. With them: NCCL on CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on
CPU. `batch_size` in the config is the GLOBAL batch: every process draws the same shuffled batches and trains on its
own slice of each one (rank r takes items r, r + N, ...), so N processes follow the single-process recipe (same
batches, same number of steps, same learning-rate schedule) and DDP averages their gradients. Rank 0 writes
everything; the others wait at a barrier wherever they need what it wrote.
"""
import inspect
import os
import sys
from contextlib import contextmanager

import torch
import torch.distributed as dist

if dist.is_available():
    # DistributedDataParallel imports this module the first time it wraps a model. Imported then, its functions'
    # default arguments (group=group.WORLD) would hold the live process group, so destroy_process_group() could not
    # free it: gloo's threads would outlive it and be torn down with the interpreter, which now and then aborts a
    # process that has finished its work. Imported now, before any group exists, the defaults are None.
    import torch.distributed.nn.functional  # noqa: F401


def launched():
    """True in a process started by torchrun."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if active() else 0


def world_size():
    return dist.get_world_size() if active() else 1


def is_main():
    """The process that writes checkpoints, PNGs, curves, the token cache and the console summary."""
    return rank() == 0


def start(device_choice):
    """Join the process group when launched by torchrun; returns the device name this process should use
    (cuda:LOCAL_RANK on GPUs), or device_choice unchanged for a single process."""
    if not launched() or active():
        return device_choice
    use_cuda = torch.cuda.is_available() and (device_choice == "auto" or device_choice.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if not is_main():  # one console summary, rank 0's; errors (stderr) still show from every process
        sys.stdout = open(os.devnull, "w")
    if use_cuda:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu" if device_choice == "auto" else device_choice


def stop():
    if active():
        dist.destroy_process_group()


def progress_off():
    """tqdm's `disable`: no bars on ranks other than 0, and none into a pipe or a log file (None = only on a
    terminal)."""
    return True if not is_main() else None


def barrier():
    if active():
        dist.barrier()


def shard(batch_index):
    """This process's slice of one global batch of indices."""
    return batch_index[rank()::world_size()] if active() else batch_index


def usable_batches(batches):
    """Batches every process gets at least one item of (a last batch smaller than the number of processes would
    leave one of them idle while the others wait for its gradients)."""
    return [b for b in batches if len(b) >= world_size()]


def all_equal(value):
    """True when every process holds the same (picklable) value, e.g. a fingerprint of the codebooks."""
    if not active():
        return True
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)


def gather(value):
    """Every process's value, in rank order, on every process ([value] for a single process)."""
    if not active():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def mean(value):
    """The mean of a float over the processes (a training loss each computed on its own slice)."""
    if not active():
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.item() / world_size()


class LossModule(torch.nn.Module):
    """DDP synchronizes the gradients of what its forward() computes; the models compute their loss in .loss(), so
    this wraps that call as a forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model.loss(*args)


def loss_function(model, device):
    """model.loss for a single process; under torchrun, the same loss through DistributedDataParallel. Buffers (the
    VQ-VAE's EMA codebooks) are not broadcast by DDP: the quantizer all-reduces its statistics itself, so every
    process computes the same codebook update."""
    return wrap(LossModule(model), device) if active() else model.loss


def wrap(module, device):
    """The module itself for a single process; under torchrun, in DistributedDataParallel (which makes its weights
    rank 0's and averages its gradients)."""
    if not active():
        return module
    ids = [device.index] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel
    # buffers are made equal once, at construction (newer torch names this forward_sync_buffers=False)
    no_forward_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                       else {"broadcast_buffers": False})
    return ddp(module, device_ids=ids, **no_forward_sync)


@contextmanager
def main_first():
    """Rank 0 runs the block first (building a cache, downloading data); the others run it after, reading what it
    wrote."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
