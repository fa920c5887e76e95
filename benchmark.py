"""Speed and quality-vs-temperature figures for the trained checkpoints, and the RESULTS.md page built from them.

    python benchmark.py                      # sampling and training throughput, printed
    python benchmark.py --sweep              # + FID / precision / recall vs temperature (PNG plot)
    python benchmark.py --report             # all of the above + evaluate.py's table -> RESULTS.md

Timings: each figure is the median of --repeats runs after one warm-up run, with the spread (min-max) beside it;
ratios (KV cache on vs off) come from the same process. The device and thread count are printed with them.
"""
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import config
import data
import evaluate
import training
from checkpoint import CheckpointError, default_path, load_pair
from generator import class_ids, draw_images
from models import device as devices
from models.gpt import grid_to_sequence


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
            classes = torch.arange(batch) % 10
            median, (lo, hi) = timed(lambda: draw_images(prior, vqvae, classes, device, dtype, cfg_scale=cfg_scale,
                                                         batch_size=batch, use_cache=use_cache), repeats)
            key = "kv" if use_cache else "no_kv"
            row[key] = batch / median
            row[key + "_spread"] = (batch / hi, batch / lo)
            row[key + "_seconds"] = median
        rows.append(row)
    return rows


def training_speed(prior, vqvae, cfg, device, dtype, repeats, steps=5):
    """Training images/s of each stage: `steps` optimizer steps at the configured batch size, timed `repeats` times."""
    images, labels = data.load_split(cfg.data, train=True)
    vq_batch, gpt_batch = cfg.vqvae_train.batch_size, cfg.gpt_train.batch_size
    x = data.to_model_range(images[:vq_batch]).to(device)
    tokens = grid_to_sequence(vqvae.encode(data.to_model_range(images[:gpt_batch]).to(device)))
    classes = labels[:gpt_batch].to(device)
    # train copies, so the benchmark never touches the checkpoints' weights
    vq_model = type(vqvae)(vqvae.cfg).to(device)
    vq_model.load_state_dict(vqvae.state_dict())
    gpt_model = type(prior)(prior.cfg, prior.grid_shape, prior.V).to(device)
    gpt_model.load_state_dict(prior.state_dict())

    def vq_steps():
        vq_model.train()
        opt = torch.optim.AdamW(vq_model.parameters(), lr=1e-4)
        for _ in range(steps):
            with devices.autocast(device, dtype):
                recon, _, commitment, _ = vq_model(x)
                loss = F.mse_loss(recon.float(), x) + 0.25 * commitment
            opt.zero_grad()
            loss.backward()
            opt.step()

    def gpt_steps():
        gpt_model.train()
        opt = torch.optim.AdamW(gpt_model.parameters(), lr=1e-4)
        for _ in range(steps):
            with devices.autocast(device, dtype):
                loss = gpt_model.loss(tokens, classes)
            opt.zero_grad()
            loss.backward()
            opt.step()

    out = {}
    for name, fn, batch in (("vqvae", vq_steps, vq_batch), ("gpt", gpt_steps, gpt_batch)):
        median, (lo, hi) = timed(fn, repeats)
        out[name] = {"images_per_s": steps * batch / median, "spread": (steps * batch / hi, steps * batch / lo)}
    return out


def temperature_sweep(prior, vqvae, cfg, device, dtype, temperatures, n):
    classifier = evaluate.load_classifier(default_path(cfg, "classifier"), device)
    test_images, _ = data.load_split(cfg.data, train=False)
    _, reference = evaluate.classify(classifier, test_images, device)
    rows = []
    for temperature in temperatures:
        classes, labels = class_ids(n, prior, unconditional=False)
        images = data.to_uint8(draw_images(prior, vqvae, classes, device, dtype, temperature, cfg.sample.top_k,
                                           cfg.sample.cfg_scale, cfg.sample.batch_size, cfg.seed))[:, 0]
        scores = evaluate.score(classifier, images, labels, reference, device)
        rows.append({"temperature": temperature, **scores})
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


def main(argv=None):
    parser = config.make_parser("Benchmark sampling/training speed and quality vs temperature.")
    parser.add_argument("--prior", default=None, help="prior checkpoint (default: checkpoints/gpt.pt)")
    parser.add_argument("--vqvae", default=None, help="tokenizer checkpoint (default: checkpoints/vqvae.pt)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (after one warm-up)")
    parser.add_argument("--batch-sizes", default="1,100,1000", help="sampling batch sizes")
    parser.add_argument("--sweep", action="store_true", help="FID / precision / recall vs temperature")
    parser.add_argument("--temperatures", default="0.5,0.75,1.0,1.25,1.5")
    parser.add_argument("--n", type=int, default=10_000, help="samples per temperature and for the evaluation")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md (implies --sweep)")
    parser.add_argument("--out", default="RESULTS.md", help="where --report writes")
    args, cfg = config.parse_config(parser, argv)
    try:
        run(cfg, args, argv if argv is not None else sys.argv[1:])
    except (CheckpointError, data.DataError) as e:
        sys.exit(f"error: {e}")


def run(cfg, args, argv):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    prior_path, vqvae_path = args.prior or default_path(cfg, "gpt"), args.vqvae or default_path(cfg, "vqvae")
    prior, vqvae, prior_ckpt = load_pair(prior_path, vqvae_path, device)
    if args.sweep or args.report:  # fail now, not after the speed runs
        evaluate.load_classifier(default_path(cfg, "classifier"), device)
    machine = describe_machine(device, dtype)
    print(machine)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    sampling = {scale: sampling_speed(prior, vqvae, device, dtype, batch_sizes, args.repeats, scale)
                for scale in sorted({1.0, cfg.sample.cfg_scale})}
    for scale, rows in sampling.items():
        for row in rows:
            print(f"sampling cfg {scale}, batch {row['batch']:>5}: KV cache {row['kv']:8.1f} images/s, without "
                  f"{row['no_kv']:8.1f} images/s, speedup x{row['kv'] / row['no_kv']:.2f}")
    first_image_s = next(r["kv_seconds"] for r in sampling[1.0] if r["batch"] == min(batch_sizes))
    train = training_speed(prior, vqvae, cfg, device, dtype, args.repeats)
    for name, row in train.items():
        print(f"training {name}: {row['images_per_s']:.0f} images/s")
    if not (args.sweep or args.report):
        return
    temperatures = [float(t) for t in args.temperatures.split(",")]
    sweep = temperature_sweep(prior, vqvae, cfg, device, dtype, temperatures, args.n)
    plot_path = os.path.join("_writeup_images", "temperature_sweep.png") if args.report else \
        os.path.join(cfg.results_dir, "benchmark", "temperature_sweep.png")
    plot_sweep(sweep, plot_path)
    print(f"sweep plot: {plot_path}")
    if args.report:
        ev_args = SimpleNamespace(samples=None, train_classifier=False, n=args.n, temperature=1.0, prior=prior_path,
                                  vqvae=vqvae_path, no_reference=False)
        quality = evaluate.evaluate(cfg, ev_args)
        write_report(args.out, cfg, argv, machine, prior_ckpt, vqvae_path, sampling, first_image_s, train, sweep,
                     quality, plot_path)
        print(f"report: {args.out}")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path, cfg, argv, machine, prior_ckpt, vqvae_path, sampling, first_image_s, train, sweep, quality,
                 plot_path):
    from checkpoint import load_vqvae
    _, vq_ckpt = load_vqvae(vqvae_path)
    H, W, K = prior_ckpt["grid_shape"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    commit += " with uncommitted changes" if dirty else ""
    best = min(sweep, key=lambda r: r["fid"])
    quality_rows = [[name, r["n"], f"{r['fid']:.2f}", f"{r['kid_x1000']:.2f}", f"{r['precision']:.3f}",
                     f"{r['recall']:.3f}", "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}",
                     f"{r['confidence']:.3f}", f"{r['class_entropy_bits']:.3f}"]
                    for name, r in quality["rows"].items()]
    vq_hist, gpt_hist = vq_ckpt["history"][-1], prior_ckpt["history"][-1]
    text = f"""# Results

Produced by `python benchmark.py {' '.join(argv)}` on {datetime.date.today().isoformat()} (commit {commit}).
Machine: {machine}.
Checkpoints: tokenizer {prior_ckpt['tokenizer_id']} ({H}x{W}x{K} tokens, {prior_ckpt['codebook_size']} codes per
codebook), GPT trained {prior_ckpt['epoch']} epochs.

## Training

| stage | wall time | final validation figure |
|---|---|---|
| VQ-VAE | {vq_hist['seconds']:.0f} s | reconstruction MSE {vq_hist['val_mse']:.4f} (pixels in [0, 1]), codebook usage {vq_hist['usage']:.0%} |
| GPT | {gpt_hist['seconds']:.0f} s | {gpt_hist['val_loss']:.4f} nats = {gpt_hist['val_bits_per_token']:.3f} bits per token = {gpt_hist['val_bits_per_token'] * H * W * K:.1f} bits per image |

## Quality (classifier-FID and friends, {quality['rows'][list(quality['rows'])[-1]]['n']} samples at temperature 1.0, guidance {cfg.sample.cfg_scale})

Features: the penultimate layer of the repo's own MNIST classifier (`evaluate.py --train-classifier`), compared
with the MNIST test set. Real training digits are the floor; VQ-VAE reconstructions of the test set are the best any
prior on this tokenizer can reach.

{_table(['set', 'n', 'FID', 'KID x1000', 'precision', 'recall', 'class accuracy', 'confidence', 'class entropy (bits)'], quality_rows)}

## Quality vs temperature ({args_n(sweep)} samples each, guidance {cfg.sample.cfg_scale})

{_table(['temperature', 'FID', 'precision', 'recall', 'class accuracy'], [[r['temperature'], f"{r['fid']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['accuracy']:.3f}"] for r in sweep])}

Best FID at temperature {best['temperature']}.

Likelihood of the MNIST test set under the prior (class-conditional): {quality['likelihood']['bits_per_token']:.3f} bits per token, {quality['likelihood']['bits_per_image']:.1f} bits per image.

![FID, precision and recall vs temperature]({plot_path})

## Sampling speed (tokens + decoding, images/s; median of runs, min-max in brackets)

Guidance scale {cfg.sample.cfg_scale} is generator.py's default; with guidance each image costs two sequences.

{_table(['guidance', 'batch', 'KV cache', 'no KV cache', 'speedup'], [[scale, r['batch'], f"{r['kv']:.1f} ({r['kv_spread'][0]:.1f}-{r['kv_spread'][1]:.1f})", f"{r['no_kv']:.1f} ({r['no_kv_spread'][0]:.1f}-{r['no_kv_spread'][1]:.1f})", f"x{r['kv'] / r['no_kv']:.2f}"] for scale, rows in sampling.items() for r in rows])}

Time to first image (batch {min(r['batch'] for r in sampling[1.0])}, no guidance, KV cache): {first_image_s * 1000:.1f} ms.

## Training speed (images/s at the configured batch sizes)

{_table(['stage', 'images/s', 'spread'], [[name, f"{r['images_per_s']:.0f}", f"{r['spread'][0]:.0f}-{r['spread'][1]:.0f}"] for name, r in train.items()])}
"""
    with open(path, "w") as f:
        f.write(text)


def args_n(sweep):
    return sweep[0]["n"] if sweep else 0


if __name__ == "__main__":
    main()
