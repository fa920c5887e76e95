"""Speed and quality figures for every trained prior, and the RESULTS.md page built from them.

    python benchmark.py                      # sampling and training throughput, printed
    python benchmark.py --sweep              # + the GPT's FID / precision / recall vs temperature (PNG plot)
    python benchmark.py --report             # all of the above + every prior side by side -> RESULTS.md

The report compares every trained prior in the checkpoint folder (checkpoints/gpt.pt is required; var.pt,
diffusion.pt, diffusion_uniform.pt and any other prior checkpoint are added when present), each on its own
tokenizer: classifier-FID and friends on --n samples, images/s and forward passes per image, and for the priors with
reverse steps (diffusion) the same at 4, 8, 16 and 32 steps.
Timings: each speed figure is the median of --repeats runs after one warm-up run, with the spread (min-max) beside
it; ratios (KV cache on vs off) come from the same process. Quality rows time their own --n samples once.
"""
import copy
import datetime
import glob
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import config
import data
import evaluate
import training
import utilization
from files import WriteError, atomic_write
from checkpoint import CheckpointError, default_path, find_tokenizer, load_file, load_pair, load_vqvae
from generator import class_ids, draw_images
from models import device as devices
from models.prior import registered

STEP_COUNTS = (4, 8, 16, 32)  # reverse steps tried for the priors that have them (--steps)


def timed(fn, repeats, warmup=1):
    """Median and (min, max) wall seconds of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), (min(seconds), max(seconds))


def sampling_speed(prior, vqvae, device, dtype, batch_sizes, repeats, cfg_scale=1.0):
    """images/s of the full sampler (tokens + decoding) per batch size, KV cache on and off.

    With guidance (cfg_scale != 1) every image costs two sequences, a conditional and an unconditional one."""
    rows = []
    for batch in batch_sizes:
        row = {"batch": batch}
        for use_cache in (True, False):
            classes = torch.arange(batch) % prior.cfg.num_classes
            median, (lo, hi) = timed(lambda: draw_images(prior, vqvae, classes, device, dtype, cfg_scale=cfg_scale,
                                                         batch_size=batch, use_cache=use_cache), repeats)
            key = "kv" if use_cache else "no_kv"
            row[key] = batch / median
            row[key + "_spread"] = (batch / hi, batch / lo)
            row[key + "_seconds"] = median
        rows.append(row)
    return rows


def training_speed(prior, vqvae, cfg, device, dtype, repeats, steps=5, include_vqvae=True):
    """Training images/s of the tokenizer and the prior: `steps` optimizer steps at the configured batch size, timed
    `repeats` times, each in the dtype its training script uses. Returns {"vqvae": ..., prior.kind: ...}, each with
    images/s, spread and dtype; include_vqvae=False times the prior alone."""
    images, labels = data.load_split(cfg.data, train=True)
    vq_batch, prior_batch = cfg.vqvae_train.batch_size, getattr(cfg, f"{prior.kind}_train").batch_size
    x = data.to_model_range(images[:vq_batch]).to(device)
    tokens = vqvae.encode_sequence(data.to_model_range(images[:prior_batch]).to(device))
    classes = labels[:prior_batch].to(device)
    # train copies, so the benchmark never touches the checkpoints' weights
    vq_model, prior_model = copy.deepcopy(vqvae), copy.deepcopy(prior)
    vq_dtype = devices.amp_dtype(device, cfg.amp, tokenizer_training=True)

    def vq_steps():
        vq_model.train()
        opt = torch.optim.AdamW(vq_model.parameters(), lr=1e-4)
        for _ in range(steps):
            with devices.autocast(device, vq_dtype):
                loss, _ = vq_model.loss(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        devices.synchronize(device)

    def prior_steps():
        prior_model.train()
        opt = torch.optim.AdamW([p for p in prior_model.parameters() if p.requires_grad], lr=1e-4)
        for _ in range(steps):
            with devices.autocast(device, dtype):
                loss = prior_model.loss(tokens, classes)
            opt.zero_grad()
            loss.backward()
            opt.step()
        devices.synchronize(device)

    out = {}
    stages = [("vqvae", vq_steps, vq_batch, vq_dtype)] if include_vqvae else []
    for name, fn, batch, stage_dtype in stages + [(prior.kind, prior_steps, prior_batch, dtype)]:
        median, (lo, hi) = timed(fn, repeats)
        out[name] = {"images_per_s": steps * batch / median, "spread": (steps * batch / hi, steps * batch / lo),
                     "dtype": stage_dtype}
    return out


def temperature_sweep(prior, vqvae, cfg, device, dtype, temperatures, n):
    classifier = evaluate.load_classifier(evaluate.classifier_path(cfg), device, cfg.data.dataset)
    test_images, _ = data.load_split(cfg.data, train=False)
    _, reference = evaluate.classify(classifier, test_images, device)
    rows = []
    _, guidance = config.sampling_settings(cfg, prior)
    for temperature in temperatures:
        classes, labels = class_ids(n, prior, unconditional=False)
        images = data.to_uint8(draw_images(prior, vqvae, classes, device, dtype, temperature, cfg.sample.top_k,
                                           guidance, cfg.sample.batch_size, cfg.seed))
        scores = evaluate.score(classifier, images, labels, reference, device)
        rows.append({"temperature": temperature, "cfg_scale": guidance, **scores})
        print(f"T={temperature:.2f}: FID {scores['fid']:.2f}  precision {scores['precision']:.3f}  "
              f"recall {scores['recall']:.3f}  accuracy {scores['accuracy']:.3f}")
    return rows


def plot_sweep(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    temps = [r["temperature"] for r in rows]
    fig, (ax_fid, ax_pr) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    ax_fid.plot(temps, [r["fid"] for r in rows], marker="o")
    ax_fid.set(xlabel="temperature", ylabel="classifier-FID (lower is better)", title="FID vs temperature")
    for key in ("precision", "recall", "accuracy"):
        ax_pr.plot(temps, [r[key] for r in rows], marker="o", label=key)
    ax_pr.set(xlabel="temperature", title="precision / recall / class accuracy")
    for ax in (ax_fid, ax_pr):
        ax.grid(alpha=0.3)
    ax_pr.legend()
    training.save_figure(fig, path)


def describe_machine(device, dtype):
    cpu = platform.processor() or platform.machine()
    return f"{devices.describe(device, dtype)}; {cpu}; torch {torch.__version__}; {os.cpu_count()} logical CPUs"




# --- all priors side by side ----------------------------------------------------------------------------------------

def load_priors(cfg, device):
    """Every trained prior in the checkpoint folder, each with its tokenizer, in config.py's order of the priors:
    checkpoints/gpt.pt is required (the temperature sweep runs on it), the others are used when present."""
    gpt_path = default_path(cfg, "gpt")
    paths = [gpt_path] + [p for p in sorted(glob.glob(os.path.join(cfg.checkpoint_dir, "*.pt"))) if p != gpt_path]
    found = []
    for path in paths:
        if path != gpt_path and load_file(path).get("kind") not in registered():
            continue  # a tokenizer, the classifier, ...
        prior, vqvae, ckpt = load_pair(path, None, device, dataset=cfg.data.dataset, compile=cfg.sample.compile)
        found.append({"label": prior.title, "name": prior.name, "prior": prior, "vqvae": vqvae, "ckpt": ckpt,
                      "vqvae_path": find_tokenizer(path, ckpt)})
    order = list(config.PRIORS)
    found[1:] = sorted(found[1:], key=lambda e: order.index(e["prior"].kind) if e["prior"].kind in order else len(order))
    for entry in found:
        print(f"{entry['label']}: {default_path(cfg, entry['name'])}")
    return found


def quality_row(entry, classifier, reference, cfg, device, dtype, n, steps=None):
    """Draw n samples at the prior's own temperature and guidance, time them, and score them."""
    prior, vqvae = entry["prior"], entry["vqvae"]
    classes, labels = class_ids(n, prior, unconditional=False)
    temperature, guidance = config.sampling_settings(cfg, prior)
    t0 = time.perf_counter()
    images = draw_images(prior, vqvae, classes, device, dtype, temperature, cfg.sample.top_k, guidance,
                         cfg.sample.batch_size, cfg.seed, steps=steps, progress=True)
    seconds = time.perf_counter() - t0
    scores = evaluate.score(classifier, data.to_uint8(images), labels, reference, device)
    row = {**scores, "images_per_s": n / seconds, "forward_passes": prior.forward_passes(steps), "steps": steps,
           "temperature": temperature, "cfg_scale": guidance}
    print(f"{entry['label']}{'' if steps is None else f', {steps} steps'}: FID {row['fid']:.2f}  accuracy "
          f"{row['accuracy']:.3f}  {row['images_per_s']:.0f} images/s  {row['forward_passes']} forward passes")
    return row


def compare_priors(entries, cfg, device, dtype, n, step_counts):
    """Quality of every prior (and of each tokenizer's reconstructions), plus the priors with reverse steps at
    several step counts."""
    classifier = evaluate.load_classifier(evaluate.classifier_path(cfg), device, cfg.data.dataset)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    train_images, train_labels = data.load_split(cfg.data, train=True)
    _, reference = evaluate.classify(classifier, test_images, device)
    references = {"real train images (floor)": evaluate.score(classifier, train_images[:n], train_labels[:n],
                                                              reference, device)}
    for entry in entries:
        label = f"{'multi-scale' if entry['vqvae'].multiscale else 'single-scale'} VQ-VAE recon of test (ceiling)"
        if label not in references:
            recon = evaluate.reconstructions(entry["vqvae"], test_images[:n], device)
            references[label] = evaluate.score(classifier, recon, test_labels[:n], reference, device)
    for entry in entries:
        prior = entry["prior"]
        if prior.sampling_steps:
            entry["steps_rows"] = [quality_row(entry, classifier, reference, cfg, device, dtype, n, steps)
                                   for steps in step_counts]
            default = [r for r in entry["steps_rows"] if r["steps"] == prior.cfg.steps]
            entry["quality"] = default[0] if default else quality_row(entry, classifier, reference, cfg, device,
                                                                       dtype, n)
        else:
            entry["quality"] = quality_row(entry, classifier, reference, cfg, device, dtype, n)
        if prior.exact_likelihood:
            entry["likelihood"] = evaluate.test_likelihood(prior, entry["vqvae"], test_images, test_labels, device)
    return references


def positive_ints(text):
    """'4,8,16' -> [4, 8, 16]; None when any item is not a positive integer."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        return None
    return values if all(v >= 1 for v in values) else None


def main(argv=None):
    parser = config.make_parser("Benchmark sampling/training speed and quality of every trained prior.")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (after one warm-up)")
    parser.add_argument("--batch-sizes", default="1,100,1000", help="sampling batch sizes")
    parser.add_argument("--sweep", action="store_true", help="the GPT's FID / precision / recall vs temperature")
    parser.add_argument("--temperatures", default="0.5,0.75,1.0,1.1,1.2,1.3,1.5")
    parser.add_argument("--n", type=int, default=10_000, help="samples per temperature and per quality row")
    parser.add_argument("--steps", default=",".join(map(str, STEP_COUNTS)),
                        help="reverse-step counts for the priors that have them")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md (implies --sweep)")
    parser.add_argument("--out", default="RESULTS.md", help="where --report and --utilization write")
    parser.add_argument("--utilization", action="store_true",
                        help="MFU of sampling and training against this device's matmul peak (untrained models of "
                             "the config; no checkpoints needed), written into --out")
    args, cfg = config.parse_config(parser, argv)
    args.steps = positive_ints(args.steps)
    if args.steps is None:
        sys.exit("error: --steps must be positive integers separated by commas, e.g. 4,8,16")
    try:
        if args.utilization:
            report_utilization(cfg, args)
        else:
            run(cfg, args, argv if argv is not None else sys.argv[1:])
    except (CheckpointError, data.DataError, WriteError) as e:
        sys.exit(f"error: {e}")


def run(cfg, args, argv):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    entries = load_priors(cfg, device)
    if args.sweep or args.report:  # fail now, not after the speed runs
        evaluate.load_classifier(evaluate.classifier_path(cfg), device, cfg.data.dataset)
    machine = describe_machine(device, dtype)
    print(machine)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    sampling, train, timed_tokenizers = {}, {}, set()
    for entry in entries:
        prior, vqvae = entry["prior"], entry["vqvae"]
        if prior.kv_cache:  # with and without it
            sampling[entry["label"]] = {scale: sampling_speed(prior, vqvae, device, dtype, batch_sizes, args.repeats,
                                                              scale)
                                           for scale in sorted({1.0, config.sampling_settings(cfg, prior)[1]})}
            for scale, rows in sampling[entry["label"]].items():
                for row in rows:
                    print(f"{entry['label']} sampling cfg {scale}, batch {row['batch']:>5}: KV cache {row['kv']:8.1f} "
                          f"images/s, without {row['no_kv']:8.1f} images/s, speedup x{row['kv'] / row['no_kv']:.2f}")
        stages = training_speed(prior, vqvae, cfg, device, dtype, args.repeats,
                                include_vqvae=entry["vqvae_path"] not in timed_tokenizers)  # each tokenizer once
        timed_tokenizers.add(entry["vqvae_path"])
        for stage, row in stages.items():
            key = f"{'multi-scale ' if vqvae.multiscale else ''}{stage}" if stage == "vqvae" else entry["name"]
            train[key] = row
            print(f"training {key}: {row['images_per_s']:.0f} images/s")
    if not (args.sweep or args.report):
        return
    gpt = entries[0]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    sweep = temperature_sweep(gpt["prior"], gpt["vqvae"], cfg, device, dtype, temperatures, args.n)
    # --report: beside the report (_writeup_images/[<dataset>/]), so the report's relative link finds it
    plot_path = os.path.join(os.path.dirname(args.out), "_writeup_images", data.dataset(cfg.data.dataset).folder,
                             "temperature_sweep.png") if args.report else \
        os.path.join(cfg.results_dir, "benchmark", "temperature_sweep.png")
    plot_sweep(sweep, plot_path)
    print(f"sweep plot: {plot_path}")
    if args.report:
        references = compare_priors(entries, cfg, device, dtype, args.n, args.steps)
        write_report(args.out, cfg, argv, machine, entries, references, sampling, train, sweep, plot_path, args.n)
        print(f"report: {args.out}")


# --- utilization (MFU) -----------------------------------------------------------------------------------------------

def measure_utilization(cfg, device, dtype, batch, repeats):
    """(peaks, rows): this device's matmul peaks and one utilization.row per sampling mode and training stage of
    every prior the config describes, measured against the peak of the dtype the models run in."""
    found = utilization.peaks(device)
    # a bf16 stage against the higher of the two peaks: on some CPUs a large bf16 torch.mm runs below the float32
    # peak while bf16 autocast still trains these small models faster, and MFU must not pass 100%
    peak_of = lambda stage_dtype: (max(found.values()) if stage_dtype == torch.bfloat16 else found["float32"])
    peak = peak_of(dtype)
    rows, timed_tokenizers = [], set()
    for prior, vqvae in utilization.untrained_models(cfg, device):
        classes = torch.arange(batch) % prior.cfg.num_classes
        decoder = vqvae.flops()["decoder"]
        mine = []
        for scale in sorted({1.0, config.sampling_settings(cfg, prior)[1]}):
            median, _ = timed(lambda: draw_images(prior, vqvae, classes, device, dtype, cfg_scale=scale,
                                                  batch_size=batch), repeats)
            mine.append(utilization.row(f"{prior.title}: sampling, guidance {scale:g}, batch {batch}",
                                        prior.sampling_flops(None, scale) + decoder, batch / median, peak))
        speeds = training_speed(prior, vqvae, cfg, device, dtype, repeats,
                                include_vqvae=id(vqvae) not in timed_tokenizers)  # each tokenizer once
        timed_tokenizers.add(id(vqvae))
        for stage, speed in speeds.items():
            if stage == "vqvae":
                name = f"{'multi-scale ' * vqvae.multiscale}VQ-VAE"
                flops, batch_size = 3 * sum(vqvae.flops().values()), cfg.vqvae_train.batch_size
            else:
                name, flops, batch_size = (prior.title, 3 * prior.flops_per_sequence(),
                                           getattr(cfg, f"{prior.kind}_train").batch_size)
            mine.append(utilization.row(f"{name}: training step, batch {batch_size}", flops, speed["images_per_s"],
                                        peak_of(speed["dtype"])))
        for r in mine:
            print(f"{r['stage']}: {r['images_per_s']:.0f} images/s, {r['gflops_per_s']:.1f} GFLOP/s, "
                  f"MFU {r['mfu']:.1%}")
        rows += mine
    return found, rows


def report_utilization(cfg, args):
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    machine = describe_machine(device, dtype)
    print(machine)
    batch = int(args.batch_sizes.split(",")[-1])
    found, rows = measure_utilization(cfg, device, dtype, batch, args.repeats)
    peaks = ", ".join(f"{name} {flops / 1e9:.1f} GFLOP/s" for name, flops in found.items())
    print(f"matmul peak: {peaks}")
    table = _table(["stage", "MFLOPs per image", "images/s", "achieved GFLOP/s", "MFU"],
                   [[r["stage"], f"{r['mflops_per_image']:.1f}", f"{r['images_per_s']:.0f}",
                     f"{r['gflops_per_s']:.1f}", f"{r['mfu']:.1%}"] for r in rows])
    command = "python benchmark.py --utilization" + "".join(f" {a}" for a in sys.argv[1:] if a != "--utilization")
    dtype_name = _dtype_name(dtype)
    vq_name = _dtype_name(devices.amp_dtype(device, cfg.amp, tokenizer_training=True))
    text = f"""Generated by `{command.strip()}` on {machine}.

Attainable matmul peak of this device (2048 x 2048 torch.mm, best of {args.repeats}): {peaks}. Sampling and the
priors' training run in {dtype_name}, the tokenizer's training in {vq_name}; a float32 stage's MFU is measured
against the float32 peak, a bfloat16 stage's against the higher of the two. FLOPs per image are counted from the config
(utilization.py): sampling = the prior's tokens (a KV cache computes each token once; guidance doubles the
sequences) + the decoder; training = 3 x the forward pass. Models untrained, of the config's architecture.

{table}
"""
    write_section(args.out, f"utilization-{device.type}", f"Utilization ({cfg.data.dataset} config, {device.type})",
                  text)
    print(f"report: {args.out}")


# --- RESULTS.md -----------------------------------------------------------------------------------------------------

def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _quality_cells(r):
    return [f"{r['fid']:.2f}", f"{r['kid_x1000']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
            "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}", f"{r['confidence']:.3f}",
            f"{r['class_entropy_bits']:.3f}"]


def _dtype_name(dtype):
    return str(dtype or torch.float32).replace("torch.", "")


def _tokens(vqvae):
    if vqvae.multiscale:
        return f"scales {'+'.join(f'{s}x{s}' for s in vqvae.cfg.scales)} = {vqvae.sequence_length}"
    H, W, K = vqvae.grid_shape
    return f"{H}x{W}x{K} = {vqvae.sequence_length}"


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


def write_report(path, cfg, argv, machine, entries, references, sampling, train, sweep, plot_path, n):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    commit += " with uncommitted changes" if dirty else ""
    tokenizers = {}
    for entry in entries:
        tokenizers.setdefault(entry["vqvae_path"], entry["vqvae"])
    tok_rows, train_rows = [], []
    for vq_path, vqvae in tokenizers.items():
        _, ck = load_vqvae(vq_path)
        hist, metrics = ck["history"][-1], ck["metrics"]
        ceiling = references[f"{'multi-scale' if vqvae.multiscale else 'single-scale'} VQ-VAE recon of test (ceiling)"]
        usage = " / ".join(f"{u:.0%}" for u in metrics["usage"])
        perplexity = " / ".join(f"{p:.0f}" for p in metrics["perplexity"])
        tok_rows.append([os.path.basename(vq_path), _tokens(vqvae), vqvae.cfg.codebook_size, f"{hist['val_mse']:.4f}",
                         usage, perplexity, f"{ceiling['fid']:.2f}", f"{ceiling['accuracy']:.3f}"])
        train_rows.append([os.path.basename(vq_path), f"{training.count_parameters(vqvae) / 1e6:.2f}M", ck["epoch"],
                           f"{hist['seconds']:.0f} s", f"reconstruction MSE {hist['val_mse']:.4f}"])
    for entry in entries:
        ck, prior = entry["ckpt"], entry["prior"]
        hist = ck["history"][-1]
        figure = (f"{hist['val_loss']:.4f} nats = {hist['val_bits_per_token']:.3f} bits/token" if prior.exact_likelihood
                  else f"denoising loss {hist['val_loss']:.4f} nats/token")
        train_rows.append([f"{entry['name']}.pt", f"{training.count_parameters(prior, trainable=True) / 1e6:.2f}M",
                           ck["epoch"], f"{hist['seconds']:.0f} s", figure])
    ref_rows = [[name, r["n"], *_quality_cells(r), "-", "-", "-"] for name, r in references.items()]
    prior_rows = []
    for entry in entries:
        q, prior = entry["quality"], entry["prior"]
        nll = f"{entry['likelihood']['bits_per_image']:.1f}" if "likelihood" in entry else "-"
        steps = f", {q['steps'] or prior.cfg.steps} steps" if prior.sampling_steps else ""
        prior_rows.append([f"**{entry['label']}**{steps}, {_setting(q)}", q["n"], *_quality_cells(q), nll,
                           q["forward_passes"], f"{q['images_per_s']:.0f}"])
    step_rows = [[f"{entry['label']}, {_setting(r)}", r["steps"], r["forward_passes"], f"{r['fid']:.2f}",
                  f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['accuracy']:.3f}", f"{r['images_per_s']:.0f}"]
                 for entry in entries for r in entry.get("steps_rows", [])]
    speed_rows = [[label, scale, r["batch"], f"{r['kv']:.1f} ({r['kv_spread'][0]:.1f}-{r['kv_spread'][1]:.1f})",
                   f"{r['no_kv']:.1f} ({r['no_kv_spread'][0]:.1f}-{r['no_kv_spread'][1]:.1f})",
                   f"x{r['kv'] / r['no_kv']:.2f}"]
                  for label, by_scale in sampling.items() for scale, rows in by_scale.items() for r in rows]
    on_tokenizers = "; ".join(
        f"{', '.join(e['label'] for e in entries if e['vqvae_path'] == vq_path)} on {os.path.basename(vq_path)} "
        f"({_tokens(vqvae)} tokens, {vqvae.cfg.codebook_size} codes)" for vq_path, vqvae in tokenizers.items())
    best = min(sweep, key=lambda r: r["fid"])
    sweep_guidance = sweep[0]["cfg_scale"]
    spec = data.dataset(cfg.data.dataset)
    text = f"""Produced by `python benchmark.py {' '.join(argv)}` on {datetime.date.today().isoformat()} (commit {commit}).
Machine: {machine}. Scored with the classifier {os.path.relpath(evaluate.classifier_path(cfg))}.
Every prior was trained by `transformer_train.py` with its default config, each on its tokenizer: {on_tokenizers}.

### Which prior wins at which budget

Best classifier-FID among all priors and step counts whose sampler needs at most that many transformer forward
passes per image ({n} samples, each prior at its own temperature T and guidance g; images/s at batch
{cfg.sample.batch_size}):

{_table(['forward passes per image', 'best prior', 'FID', 'images/s'], budget_lines(entries))}

### Training

| checkpoint | trainable parameters | epochs | wall time | final validation figure |
|---|---|---|---|---|
""" + "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in train_rows) + f"""

Wall time is the sum of the training epochs as the training script measured it (evaluation and sample grids not
included), on this machine; a busy machine inflates it, so the throughput table below is the cleaner speed figure.

### Tokenizers: single-scale vs multi-scale at equal codebook size

{_table(['tokenizer', 'tokens per image', 'codes', 'val MSE (pixels in [0, 1])', 'code usage (per codebook or scale)', 'perplexity', 'recon FID', 'recon class accuracy'], tok_rows)}

### Quality: every prior side by side ({n} samples, each at its prior's temperature T and guidance g)

Features: the penultimate layer of the repo's own {spec.title} classifier (`evaluate.py --train-classifier`), compared
with the {spec.title} test set. Real training images are the floor; a tokenizer's reconstructions of the test set are the
best any prior on that tokenizer can reach. NLL: the prior's exact negative log-likelihood of the test set's tokens
(bits per image; the diffusion priors have no exact likelihood). Forward passes: transformer evaluations per image
(guidance runs the unconditional copy in the same batch). images/s: these {n} samples at batch
{cfg.sample.batch_size}, tokens and decoding included, timed once.

{_table(['set', 'n', 'FID', 'KID x1000', 'precision', 'recall', 'class accuracy', 'confidence', 'class entropy (bits)', 'NLL bits/image', 'forward passes', 'images/s'], ref_rows + prior_rows)}

### Discrete diffusion: quality and speed vs reverse steps ({n} samples each)

The mask process reveals at least one token per step, so with L tokens it never needs more than L forward
passes; the uniform process runs one pass per step.

{_table(['prior', 'steps', 'forward passes', 'FID', 'precision', 'recall', 'class accuracy', 'images/s'], step_rows)}

### The GPT's quality vs temperature ({n} samples each, guidance {sweep_guidance:g})

{_table(['temperature', 'FID', 'precision', 'recall', 'class accuracy'], [[r['temperature'], f"{r['fid']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['accuracy']:.3f}"] for r in sweep])}

Best FID at temperature {best['temperature']}.

![FID, precision and recall vs temperature]({os.path.relpath(plot_path, os.path.dirname(os.path.abspath(path)))})

### Sampling speed with and without the KV cache (tokens + decoding, images/s; median of runs, min-max in brackets)

Each prior's guidance scale is its config section's default; with guidance each image costs two sequences. The GPT
draws one token per forward pass, VAR one whole scale.

{_table(['prior', 'guidance', 'batch', 'KV cache', 'no KV cache', 'speedup'], speed_rows)}

### Training speed (images/s at the configured batch sizes)

{_table(['stage', 'images/s', 'spread', 'precision'], [[name, f"{r['images_per_s']:.0f}", f"{r['spread'][0]:.0f}-{r['spread'][1]:.0f}", _dtype_name(r['dtype'])] for name, r in train.items()])}
"""
    write_section(path, spec.name, spec.title, text)


def _setting(row):
    """A quality row's sampling point as the tables write it: T=1.15, g=1.75."""
    return f"T={row['temperature']:g}, g={row['cfg_scale']:g}"


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

    atomic_write(path, write)



if __name__ == "__main__":
    main()
