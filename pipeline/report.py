"""RESULTS.md sections as Markdown: the tables benchmark.py measured, each section between its own markers so that
a new report of one dataset (or of the utilization) replaces only that section."""
import datetime
import os
import subprocess

import torch

from pipeline.checkpoint import load_vqvae
from pipeline.files import atomic_write
from pipeline.training import count_parameters


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def quality_cells(r):
    return [f"{r['fid']:.2f}", f"{r['kid_x1000']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
            "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}", f"{r['confidence']:.3f}",
            f"{r['class_entropy_bits']:.3f}"]


def dtype_name(dtype):
    return str(dtype or torch.float32).replace("torch.", "")


def tokens_text(vqvae):
    if vqvae.multiscale:
        return f"scales {'+'.join(f'{s}x{s}' for s in vqvae.cfg.scales)} = {vqvae.sequence_length}"
    H, W, K = vqvae.grid_shape
    return f"{H}x{W}x{K} = {vqvae.sequence_length}"


def setting(row):
    """A quality row's sampling point as the tables write it: T=1.15, g=1.75."""
    return f"T={row['temperature']:g}, g={row['guidance']:g}"


def commit_text():
    """The commit the figures were measured at, and whether tracked files differed from it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return commit + (" with uncommitted changes" if dirty else "")


def write_section(path, name, title, text):
    """Put one report (a dataset's, or the utilization table) into RESULTS.md between its markers, keeping the
    others."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{begin}\n## {title}\n\n{text.strip()}\n{end}"
    old = open(path).read() if os.path.exists(path) else "# Results\n"
    if begin in old and end in old:
        new = old[:old.index(begin)] + section + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"

    def write(tmp_path):
        with open(tmp_path, "w") as f:
            f.write(new)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, write)


# --- the utilization section ---------------------------------------------------------------------------------------

def peaks_text(found):
    return ", ".join(f"{name} {flops / 1e9:.1f} GFLOP/s" for name, flops in found.items())


def utilization_section(command, machine, repeats, found, rows, dtype, tokenizer_dtype):
    utilization_table = table(["stage", "MFLOPs per image", "images/s", "achieved GFLOP/s", "MFU"],
                              [[r["stage"], f"{r['mflops_per_image']:.1f}", f"{r['images_per_s']:.0f}",
                                f"{r['gflops_per_s']:.1f}", f"{r['mfu']:.1%}"] for r in rows])
    return f"""Produced by `{command.strip()}` on {datetime.date.today().isoformat()} (commit {commit_text()}), on {machine}.

Attainable matmul peak of this device (2048 x 2048 torch.mm, best of {repeats}): {peaks_text(found)}. Sampling and the
priors' training run in {dtype_name(dtype)}, the tokenizer's training in {dtype_name(tokenizer_dtype)}; a float32 stage's MFU is measured
against the float32 peak, a bfloat16 stage's against the higher of the two. FLOPs per image are counted from the config
(utilization.py): sampling = the prior's tokens (a KV cache computes each token once; guidance doubles the
sequences) + the decoder; training = 3 x the forward pass. Models untrained, of the config's architecture.

{utilization_table}
"""


# --- a dataset's section -------------------------------------------------------------------------------------------

def budget_lines(entries):
    """Which prior gives the best FID within each sampling budget (forward passes per image)."""
    rows = []
    for entry in entries:
        for r in entry.get("steps_rows", [entry["quality"]]):
            rows.append((r["forward_passes"], r["fid"], r["images_per_s"], entry["label"], r["steps"]))
    lines = []
    for budget in sorted({r[0] for r in rows}):
        within = [r for r in rows if r[0] <= budget]
        best = min(within, key=lambda r: r[1])
        steps = "" if best[4] is None else f" at {best[4]} steps"
        lines.append([f"<= {budget}", f"{best[3]}{steps}", f"{best[1]:.2f}", f"{best[2]:.0f}"])
    return lines


def tokenizers_of(entries):
    """{tokenizer path: tokenizer} of the priors, in the order first used."""
    tokenizers = {}
    for entry in entries:
        tokenizers.setdefault(entry["vqvae_path"], entry["vqvae"])
    return tokenizers


def tokenizer_and_training_rows(entries, references):
    """(the tokenizers' table rows, the training table's rows: tokenizers first, then the priors)."""
    tok_rows, train_rows = [], []
    for vq_path, vqvae in tokenizers_of(entries).items():
        _, ck = load_vqvae(vq_path)
        hist, measured = ck["history"][-1], ck["metrics"]
        ceiling = references[f"{'multi-scale' if vqvae.multiscale else 'single-scale'} VQ-VAE recon of test (ceiling)"]
        usage = " / ".join(f"{u:.0%}" for u in measured["usage"])
        perplexity = " / ".join(f"{p:.0f}" for p in measured["perplexity"])
        tok_rows.append([os.path.basename(vq_path), tokens_text(vqvae), vqvae.cfg.codebook_size,
                         f"{hist['val_mse']:.4f}", usage, perplexity, f"{ceiling['fid']:.2f}",
                         f"{ceiling['accuracy']:.3f}"])
        train_rows.append([os.path.basename(vq_path), f"{count_parameters(vqvae) / 1e6:.2f}M", ck["epoch"],
                           f"{hist['seconds']:.0f} s", f"reconstruction MSE {hist['val_mse']:.4f}"])
    for entry in entries:
        ck, prior = entry["ckpt"], entry["prior"]
        hist = ck["history"][-1]
        figure = (f"{hist['val_loss']:.4f} nats = {hist['val_bits_per_token']:.3f} bits/token" if prior.exact_likelihood
                  else f"denoising loss {hist['val_loss']:.4f} nats/token")
        train_rows.append([f"{entry['name']}.pt", f"{count_parameters(prior, trainable=True) / 1e6:.2f}M",
                           ck["epoch"], f"{hist['seconds']:.0f} s", figure])
    return tok_rows, train_rows


def quality_rows(entries, references):
    """The reference rows (floor, ceilings) and one row per prior at its own sampling point."""
    ref_rows = [[name, r["n"], *quality_cells(r), "-", "-", "-"] for name, r in references.items()]
    prior_rows = []
    for entry in entries:
        q, prior = entry["quality"], entry["prior"]
        nll = f"{entry['likelihood']['bits_per_image']:.1f}" if "likelihood" in entry else "-"
        steps = f", {q['steps'] or prior.cfg.steps} steps" if prior.sampling_steps else ""
        prior_rows.append([f"**{entry['label']}**{steps}, {setting(q)}", q["n"], *quality_cells(q), nll,
                           q["forward_passes"], f"{q['images_per_s']:.0f}"])
    return ref_rows + prior_rows


def steps_rows(entries):
    return [[f"{entry['label']}, {setting(r)}", r["steps"], r["forward_passes"], f"{r['fid']:.2f}",
             f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['accuracy']:.3f}", f"{r['images_per_s']:.0f}"]
            for entry in entries for r in entry.get("steps_rows", [])]


def speed_rows(sampling_speeds):
    return [[label, scale, r["batch"], f"{r['kv']:.1f} ({r['kv_spread'][0]:.1f}-{r['kv_spread'][1]:.1f})",
             f"{r['no_kv']:.1f} ({r['no_kv_spread'][0]:.1f}-{r['no_kv_spread'][1]:.1f})", f"x{r['kv'] / r['no_kv']:.2f}"]
            for label, by_scale in sampling_speeds.items() for scale, rows in by_scale.items() for r in rows]


def dataset_section(run, entries, references, sampling_speeds, train, sweep):
    """A dataset's section. run: command, machine, classifier (path), spec (the dataset entry), n, batch_size,
    plot (the sweep plot's path relative to RESULTS.md)."""
    tok_rows, train_rows = tokenizer_and_training_rows(entries, references)
    n, batch_size, spec = run["n"], run["batch_size"], run["spec"]
    on_tokenizers = "; ".join(
        f"{', '.join(e['label'] for e in entries if e['vqvae_path'] == vq_path)} on {os.path.basename(vq_path)} "
        f"({tokens_text(vqvae)} tokens, {vqvae.cfg.codebook_size} codes)"
        for vq_path, vqvae in tokenizers_of(entries).items())
    best = min(sweep, key=lambda r: r["fid"])
    sweep_rows = [[r['temperature'], f"{r['fid']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                   f"{r['accuracy']:.3f}"] for r in sweep]
    train_speed_rows = [[name, f"{r['images_per_s']:.0f}", f"{r['spread'][0]:.0f}-{r['spread'][1]:.0f}",
                         dtype_name(r['dtype'])] for name, r in train.items()]
    return f"""Produced by `{run['command']}` on {datetime.date.today().isoformat()} (commit {commit_text()}).
Machine: {run['machine']}. Scored with the classifier {run['classifier']}.
Every prior was trained by `transformer_train.py` with its default config, each on its tokenizer: {on_tokenizers}.

### Which prior wins at which budget

Best classifier-FID among all priors and step counts whose sampler needs at most that many transformer forward
passes per image ({n} samples, each prior at its own temperature T and guidance g; images/s at batch
{batch_size}):

{table(['forward passes per image', 'best prior', 'FID', 'images/s'], budget_lines(entries))}

### Training

{table(['checkpoint', 'trainable parameters', 'epochs', 'wall time', 'final validation figure'], train_rows)}

Wall time is the sum of the training epochs as the training script measured it (evaluation and sample grids not
included), on this machine; a busy machine inflates it, so the throughput table below is the cleaner speed figure.

### Tokenizers: single-scale vs multi-scale at equal codebook size

{table(['tokenizer', 'tokens per image', 'codes', 'val MSE (pixels in [0, 1])', 'code usage (per codebook or scale)', 'perplexity', 'recon FID', 'recon class accuracy'], tok_rows)}

### Quality: every prior side by side ({n} samples, each at its prior's temperature T and guidance g)

Features: the penultimate layer of the repo's own {spec.title} classifier (`evaluate.py --train-classifier`), compared
with the {spec.title} test set. Real training images are the floor; a tokenizer's reconstructions of the test set are the
best any prior on that tokenizer can reach. NLL: the prior's exact negative log-likelihood of the test set's tokens
(bits per image; the diffusion priors have no exact likelihood). Forward passes: transformer evaluations per image
(guidance runs the unconditional copy in the same batch). images/s: these {n} samples at batch
{batch_size}, tokens and decoding included, timed once.

{table(['set', 'n', 'FID', 'KID x1000', 'precision', 'recall', 'class accuracy', 'confidence', 'class entropy (bits)', 'NLL bits/image', 'forward passes', 'images/s'], quality_rows(entries, references))}

### Discrete diffusion: quality and speed vs reverse steps ({n} samples each)

The mask process reveals at least one token per step, so with L tokens it never needs more than L forward
passes; the uniform process runs one pass per step.

{table(['prior', 'steps', 'forward passes', 'FID', 'precision', 'recall', 'class accuracy', 'images/s'], steps_rows(entries))}

### The {entries[0]['label']}'s quality vs temperature ({n} samples each, guidance {sweep[0]['guidance']:g})

{table(['temperature', 'FID', 'precision', 'recall', 'class accuracy'], sweep_rows)}

Best FID at temperature {best['temperature']}.

![FID, precision and recall vs temperature]({run['plot']})

### Sampling speed with and without the KV cache (tokens + decoding, images/s; median of runs, min-max in brackets)

Each prior's guidance scale is its config section's default; with guidance each image costs two sequences. The GPT
draws one token per forward pass, VAR one whole scale.

{table(['prior', 'guidance', 'batch', 'KV cache', 'no KV cache', 'speedup'], speed_rows(sampling_speeds))}

### Training speed (images/s at the configured batch sizes)

{table(['stage', 'images/s', 'spread', 'precision'], train_speed_rows)}
"""


# --- a preset's recipe retrained (benchmark.py --retrain) ------------------------------------------------------------

def recipe_section(run, epochs, scores):
    """A retrained recipe's section. run: command, machine, preset, folder (of its checkpoints), recipe (in words);
    epochs: the tokenizer's history; scores: 'ceiling' and 'gpt' (metrics.score's results, the GPT's with its
    sampling point), 'gpt_history', 'n', 'classifier' (path)."""
    epoch_rows = [[h["epoch"], f"{h['val_mse']:.4f}", f"{h['usage']:.0%}", f"{h['seconds']:.0f}"] for h in epochs]
    ceiling, gpt, n, gpt_last = scores["ceiling"], scores["gpt"], scores["n"], scores["gpt_history"][-1]
    rows = [["tokenizer reconstructions of the test set (ceiling)", f"{epochs[-1]['seconds']:.0f}",
             *summary_cells(ceiling)],
            [f"GPT samples, {setting(gpt)} (val loss {gpt_last['val_loss']:.4f} nats)", f"{gpt_last['seconds']:.0f}",
             *summary_cells(gpt)]]
    return f"""Produced by `{run['command']}` on {datetime.date.today().isoformat()} (commit {commit_text()}).
Machine: {run['machine']}.
Trained from nothing by `python vqvae_train.py --preset {run['preset']}` and `python transformer_train.py --preset
{run['preset']}` (into {run['folder']}/): {run['recipe']}. Scored with the classifier {scores['classifier']} on {n}
images each against the test set; samples in the data's class shares.

{table(['tokenizer epoch', 'val MSE', 'codebook use (lowest)', 'seconds so far'], epoch_rows)}

{table(['', 'training seconds', 'FID', 'precision', 'recall', 'read as the requested class'], rows)}
"""


def summary_cells(r):
    return [f"{r['fid']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
            "-" if r["accuracy"] is None else f"{r['accuracy']:.1%}"]
