"""Device choice (MPS -> CUDA -> CPU), mixed precision, and seeding."""
import contextlib
import random

import numpy as np
import torch
from pipeline.errors import DeviceError


def pick_device(name="auto"):
    """'auto' takes Apple's MPS, then CUDA, then the CPU; an explicit name is checked and used."""
    if name == "auto":
        if torch.backends.mps.is_available():
            return torch.device("mps")
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for but no CUDA GPU is visible; use --device auto")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise DeviceError(f"--device {name} was asked for but this machine has {count} CUDA GPU(s): "
                          f"cuda:0 to cuda:{count - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps was asked for but MPS is not available; use --device auto")
    return torch.device(name)


def cpu_has_native_bf16():
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX). Without these instructions bf16 is
    emulated and slower than float32; with them the priors train faster at the same FID (RESULTS.md, bf16 ablation)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private, so guarded)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype(device, amp="auto", tokenizer_training=False):
    """The autocast dtype for this device, or None for full float32.

    auto: MPS float16; CUDA bfloat16 where supported, else float16; CPU bfloat16 where the CPU has native bf16
    instructions, else off (emulated bf16 is slower than float32). The tokenizer's training (tokenizer_training=True)
    stays float32 on a CPU: there its adversarial loss lost reconstruction quality in bf16 (RESULTS.md).
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "mps":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() and not tokenizer_training else None


def autocast(device, dtype):
    """A context that runs the model in `dtype` (or does nothing when dtype is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device, dtype):
    """float16 gradients underflow without loss scaling; bfloat16 and float32 need none."""
    return torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))


def compile_for_sampling(prior, vqvae):
    """torch.compile what sampling runs over and over: the prior's transformer blocks (`prior.blocks`; a prior
    without them runs eagerly) and the tokenizer's decoder. In place (Module.compile), so the weights keep their
    names; the quantizer stays eager (a lookup)."""
    for module in [*getattr(prior, "blocks", ()), vqvae.decoder]:
        module.compile()


def synchronize(device):
    """Wait for the device's queued work (GPUs run asynchronously), so a timer measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def in_words(device, dtype):
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return f"device {device}{threads}, mixed precision {'off' if dtype is None else str(dtype).replace('torch.', '')}"


def forked_rng(device):
    """A context in which the RNG of the CPU (and of `device`) can be reseeded without touching the training run's
    stream: validation of a prior whose loss draws noise (diffusion) then gives the same figure every epoch."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(device_type=device.type)
