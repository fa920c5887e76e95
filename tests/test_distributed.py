"""torchrun + DDP on the CPU (gloo): each training script with 2 processes, spawned by the test itself, against the
single-process run on the same global batch.

Tolerances: the GPT without dropout follows exactly the single-process computation except for the order of the
gradient sum (DDP averages two half-batch means), so its weights agree to ~1e-6 and losses to ~1e-7; we allow 1e-4.
The VQ-VAE agrees less closely by design: codes are started and restarted on random encoder outputs of rank 0's
half of the batch rather than of the whole batch; its reconstruction error after an epoch agrees within 5%.

The single-process tokenizers are conftest.py's (trained once per session), copied where a run writes beside them.
"""
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from script_runs import ENV, REPO, copy_run, dirs_of, finish, start

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(script, *args, preset="tiny"):
    result = subprocess.run([*TORCHRUN, script, "--preset", preset, *args], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{script} under torchrun failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def load(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def tokenizers(trained_tokenizers, tmp_path_factory):
    """The VQ-VAE trained once by one process (the session's tiny tokenizer: read only) and once by two."""
    one, two = trained_tokenizers[0], tmp_path_factory.mktemp("two")
    result = torchrun("vqvae_train.py", *dirs_of(two))
    return one, two, result


def test_two_processes_write_one_checkpoint_and_one_set_of_pngs(tokenizers):
    one, two, result = tokenizers
    assert sorted(p.name for p in (two / "ck").iterdir()) == ["vqvae.pt", "vqvae.pt.lock"]
    assert sorted(p.name for p in (two / "res" / "vqvae").iterdir()) == \
        sorted(p.name for p in (one / "res" / "vqvae").iterdir())
    assert result.stdout.count("checkpoint:") == 1  # one console summary, rank 0's


def test_the_codebooks_are_identical_on_both_processes(tokenizers):
    _, two, result = tokenizers
    tokenizer_id = load(two / "ck" / "vqvae.pt")["tokenizer_id"]
    assert f"2 processes trained tokenizer {tokenizer_id} with identical codebooks" in result.stdout


def test_the_tokenizer_follows_the_single_process_run(tokenizers):
    one, two, _ = tokenizers
    a, b = load(one / "ck" / "vqvae.pt")["history"][0], load(two / "ck" / "vqvae.pt")["history"][0]
    assert b["val_mse"] == pytest.approx(a["val_mse"], rel=0.05)
    assert b["train_mse"] == pytest.approx(a["train_mse"], rel=0.05)


def test_the_gpt_matches_the_single_process_run_on_the_same_global_batch(tokenizers, tmp_path):
    one, _, _ = tokenizers
    # float32: bf16 autocast (amp=auto on CPUs with native bf16) rounds the two half-batches differently
    flags = ["--set", "gpt.dropout=0", "--set", "gpt_train.epochs=2", "--set", "amp=off"]
    for name in ("single", "double"):
        (tmp_path / name / "ck").mkdir(parents=True)
        shutil.copyfile(one / "ck" / "vqvae.pt", tmp_path / name / "ck" / "vqvae.pt")
    single = start("transformer_train.py", *dirs_of(tmp_path / "single"), *flags)  # beside the two processes
    try:
        torchrun("transformer_train.py", *dirs_of(tmp_path / "double"), *flags)
    finally:
        finish(single)
    a, b = load(tmp_path / "single" / "ck" / "gpt.pt"), load(tmp_path / "double" / "ck" / "gpt.pt")
    for row_a, row_b in zip(a["history"], b["history"]):
        assert row_b["train_loss"] == pytest.approx(row_a["train_loss"], abs=1e-4)
        assert row_b["val_loss"] == pytest.approx(row_a["val_loss"], abs=1e-4)
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-4), key
    assert sorted(p.name for p in (tmp_path / "double" / "res" / "transformer").iterdir()) == \
        ["loss.png", "samples_epoch001.png", "samples_epoch002.png"]


@pytest.mark.parametrize("prior", ["var", "diffusion"])
def test_var_and_diffusion_train_and_resume_under_two_processes(trained_tokenizers, tmp_path, prior):
    preset = "tiny_var" if prior == "var" else "tiny"
    dirs = dirs_of(tmp_path)
    copy_run(trained_tokenizers[1 if prior == "var" else 0], tmp_path)  # vqvae_train.py --preset PRESET's tokenizer
    torchrun("transformer_train.py", *dirs, "--prior", prior, preset=preset)
    result = torchrun("transformer_train.py", *dirs, "--prior", prior, "--resume", "--set", f"{prior}_train.epochs=2",
                      preset=preset)
    assert "resuming after epoch 1" in result.stdout
    ckpt = load(tmp_path / "ck" / f"{prior}.pt")
    assert ckpt["epoch"] == 2 and len(ckpt["rng"]) == 2  # one RNG state per process


def test_the_tokenizer_resumes_under_two_processes(tokenizers, tmp_path):
    dirs = dirs_of(tmp_path)
    copy_run(tokenizers[1], tmp_path)  # torchrun vqvae_train.py's first epoch: the module's two-process tokenizer
    result = torchrun("vqvae_train.py", *dirs, "--resume", "--set", "vqvae_train.epochs=2")
    assert "resuming after epoch 1" in result.stdout and "identical codebooks" in result.stdout
    assert load(tmp_path / "ck" / "vqvae.pt")["epoch"] == 2


def test_the_adversarial_tokenizer_trains_and_resumes_under_two_processes(tmp_path):
    """The decoder's adaptive weight takes gradients outside DDP's backward, and the discriminator trains in its
    own DDP wrapper: both must leave the processes' codebooks equal, epoch after epoch."""
    dirs = [*dirs_of(tmp_path), "--set", "vqvae_train.gan_weight=0.5", "--set", "vqvae_train.gan_start_epoch=1"]
    torchrun("vqvae_train.py", *dirs)
    result = torchrun("vqvae_train.py", *dirs, "--resume", "--set", "vqvae_train.epochs=2")
    assert "resuming after epoch 1" in result.stdout and "identical codebooks" in result.stdout
    assert "discriminator loss" in result.stdout
    assert load(tmp_path / "ck" / "vqvae.pt")["discriminator"]["model"]


STOP_FREES_THE_GROUP = """
import os, torch
from pipeline import distributed
distributed.start("cpu")
distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu"))
distributed.stop()
print(sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the process's threads from /proc")
def test_stop_frees_the_process_group_and_its_threads(tmp_path):
    """After stop() no communication thread may remain: one torn down with the interpreter can abort a process that
    finished its work (DDP once kept the group alive through default arguments of a module it imports)."""
    env = {**ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-c", STOP_FREES_THE_GROUP], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gloo" not in result.stdout, result.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
