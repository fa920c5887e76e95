"""Speed and quality figures for every trained prior, and the RESULTS.md page built from them.

    python benchmark.py                      # sampling and training throughput, printed
    python benchmark.py --sweep              # + the first prior's FID / precision / recall vs temperature (PNG)
    python benchmark.py --report             # all of the above + every prior side by side -> RESULTS.md
    python benchmark.py --retrain [--report] # the preset's tokenizer and GPT trained from nothing, then scored
    python benchmark.py --tokenizers A.pt B.pt --picture P.png   # tokenizers side by side: a table and a picture

The report compares every trained prior in the checkpoint folder (gpt.pt, var.pt, diffusion.pt,
diffusion_uniform.pt, any prior checkpoint; the temperature sweep runs on the first in config.py's order), each on its own
tokenizer: classifier-FID and friends on --n samples, images/s and forward passes per image, and for the priors with
reverse steps (diffusion) the same at 4, 8, 16 and 32 steps.
Timings: each speed figure is the median of --repeats runs after one warm-up run, with the spread (min-max) beside
it; ratios (KV cache on vs off) come from the same process. Quality rows time their own --n samples once.
"""
import copy
import glob
import os
import platform
import statistics
import sys
import time

import torch

import config
from models.prior import registered
from pipeline import (cli, data, datasets, devices, figures, metrics, recipe, report, sampling, settings, tokenizer_metrics,
                      utilization)
from pipeline.checkpoint import default_path, find_tokenizer, load_file, load_pair, load_vqvae
from pipeline.errors import CheckpointError, FlagError
from pipeline.sampling import class_ids, draw_images

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


def sampling_speed(prior, vqvae, device, dtype, batch_sizes, repeats, guidance=1.0):
    """images/s of the full sampler (tokens + decoding) per batch size, KV cache on and off.

    With guidance (guidance != 1) every image costs two sequences, a conditional and an unconditional one."""
    rows = []
    for batch in batch_sizes:
        row = {"batch": batch}
        for use_cache in (True, False):
            classes = torch.arange(batch) % prior.cfg.num_classes
            median, (lo, hi) = timed(lambda: draw_images(prior, vqvae, classes, device, dtype, guidance=guidance,
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
    classifier = metrics.load_classifier(metrics.classifier_path(cfg), device, datasets.spec_of(cfg.data))
    test_images, _ = data.load_split(cfg.data, train=False)
    _, reference = metrics.classify(classifier, test_images, device)
    rows = []
    _, guidance = settings.sampling_settings(cfg, prior)
    for temperature in temperatures:
        classes, labels = class_ids(n, prior, unconditional=False, proportions=data.class_proportions(cfg.data))
        images = data.to_uint8(draw_images(prior, vqvae, classes, device, dtype, temperature, cfg.sample.top_k,
                                           guidance, cfg.sample.batch_size, cfg.seed))
        scores = metrics.score(classifier, images, labels, reference, device)
        rows.append({"temperature": temperature, "guidance": guidance, **scores})
        print(f"T={temperature:.2f}: FID {scores['fid']:.2f}  precision {scores['precision']:.3f}  "
              f"recall {scores['recall']:.3f}  accuracy {scores['accuracy']:.3f}")
    return rows


def describe_machine(device, dtype):
    cpu = platform.processor() or platform.machine()
    return f"{devices.in_words(device, dtype)}; {cpu}; torch {torch.__version__}; {os.cpu_count()} logical CPUs"


# --- all priors side by side ----------------------------------------------------------------------------------------

def load_priors(cfg, device):
    """Every trained prior in the checkpoint folder, each with its tokenizer, in config.py's order of the priors (the
    temperature sweep runs on the first); at least one is needed."""
    found = []
    for path in sorted(glob.glob(os.path.join(cfg.checkpoint_dir, "*.pt"))):
        if load_file(path).get("kind") not in registered():
            continue  # a tokenizer, the classifier, ...
        prior, vqvae, ckpt = load_pair(path, None, device, dataset=cfg.data.dataset, compile=cfg.sample.compile)
        found.append({"label": prior.title, "name": prior.name, "prior": prior, "vqvae": vqvae, "ckpt": ckpt,
                      "vqvae_path": find_tokenizer(path, ckpt)})
    if not found:
        raise CheckpointError(f"no trained prior in {cfg.checkpoint_dir}; train one first, e.g. python "
                              f"transformer_train.py --prior {config.PRIORS[0]}")
    order = list(config.PRIORS)
    found.sort(key=lambda e: order.index(e["prior"].kind) if e["prior"].kind in order else len(order))
    for entry in found:
        print(f"{entry['label']}: {default_path(cfg, entry['name'])}")
    return found


def quality_row(entry, classifier, reference, cfg, device, dtype, n, steps=None):
    """Draw n samples at the prior's own temperature and guidance, time them, and score them."""
    prior, vqvae = entry["prior"], entry["vqvae"]
    classes, labels = class_ids(n, prior, unconditional=False, proportions=data.class_proportions(cfg.data))
    temperature, guidance = settings.sampling_settings(cfg, prior)
    t0 = time.perf_counter()
    images = draw_images(prior, vqvae, classes, device, dtype, temperature, cfg.sample.top_k, guidance,
                         cfg.sample.batch_size, cfg.seed, steps=steps, progress=True)
    seconds = time.perf_counter() - t0
    scores = metrics.score(classifier, data.to_uint8(images), labels, reference, device)
    row = {**scores, "images_per_s": n / seconds, "forward_passes": prior.forward_passes(steps), "steps": steps,
           "temperature": temperature, "guidance": guidance}
    print(f"{entry['label']}{'' if steps is None else f', {steps} steps'}: FID {row['fid']:.2f}  accuracy "
          f"{row['accuracy']:.3f}  {row['images_per_s']:.0f} images/s  {row['forward_passes']} forward passes")
    return row


def compare_priors(entries, cfg, device, dtype, n, step_counts):
    """Quality of every prior (and of each tokenizer's reconstructions), plus the priors with reverse steps at
    several step counts."""
    classifier = metrics.load_classifier(metrics.classifier_path(cfg), device, datasets.spec_of(cfg.data))
    test_images, test_labels = data.load_split(cfg.data, train=False)
    train_images, train_labels = data.load_split(cfg.data, train=True)
    _, reference = metrics.classify(classifier, test_images, device)
    references = {"real train images (floor)": metrics.score(classifier, train_images[:n], train_labels[:n],
                                                              reference, device)}
    for entry in entries:
        label = f"{'multi-scale' if entry['vqvae'].multiscale else 'single-scale'} VQ-VAE recon of test (ceiling)"
        if label not in references:
            recon = metrics.reconstructions(entry["vqvae"], test_images[:n], device)
            references[label] = metrics.score(classifier, recon, test_labels[:n], reference, device)
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
            entry["likelihood"] = metrics.test_likelihood(prior, entry["vqvae"], test_images, test_labels, device)
    return references


def positive_ints(text):
    """'4,8,16' -> [4, 8, 16]; None when any item is not a positive integer."""
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        return None
    return values if all(v >= 1 for v in values) else None


def command_line():
    """The script's flags (README's and docs' commands are parsed with it in the tests)."""
    parser = cli.make_parser("Benchmark sampling/training speed and quality of every trained prior.")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (after one warm-up)")
    parser.add_argument("--batch-sizes", default="1,100,1000", help="sampling batch sizes")
    parser.add_argument("--sweep", action="store_true", help="the first prior's FID / precision / recall vs temperature")
    parser.add_argument("--temperatures", default="0.5,0.75,1.0,1.1,1.2,1.3,1.5")
    parser.add_argument("--n", type=int, default=10_000, help="samples per temperature and per quality row")
    parser.add_argument("--steps", default=",".join(map(str, STEP_COUNTS)),
                        help="reverse-step counts for the priors that have them")
    parser.add_argument("--report", action="store_true", help="write RESULTS.md (implies --sweep)")
    parser.add_argument("--out", default=None, type=cli.user_path,
                        help="where --report, --retrain --report and --utilization write (default: the repo's "
                             "RESULTS.md for a built-in dataset, RESULTS.md in the run's results folder for a folder "
                             "of images)")
    parser.add_argument("--utilization", action="store_true",
                        help="MFU of sampling and training against this device's matmul peak (untrained models of "
                             "the config; no checkpoints needed), written into --out")
    parser.add_argument("--retrain", action="store_true",
                        help="train the preset's tokenizer and GPT from nothing with their scripts (into "
                             "checkpoints/retrain/PRESET/), then score the reconstructions and --n GPT samples; with "
                             "--report, into --out")
    parser.add_argument("--tokenizers", nargs="+", type=cli.user_path, metavar="VQVAE.pt",
                        help="tokenizer checkpoints of the dataset, judged side by side on its test split: a Markdown "
                             "table printed, and with --picture the same test images reconstructed by each")
    parser.add_argument("--picture", type=cli.user_path, default=None, metavar="FILE.png",
                        help="--tokenizers: where the side-by-side reconstructions go")
    return parser


def report_file(cfg, out):
    """--out, else RESULTS.md: the repo's for the built-in datasets, and for a folder of images one beside that
    folder's results, so a user's own figures never land in the repo's tracked page."""
    if out:
        return out
    return os.path.join(cfg.results_dir, "RESULTS.md") if cfg.data.dataset == "folder" else "RESULTS.md"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, cfg = cli.parse_config(command_line(), argv)
    args.out = report_file(cfg, args.out)
    with cli.one_line_errors():
        args.steps = positive_ints(args.steps)
        if args.steps is None:
            raise FlagError("--steps must be positive integers separated by commas, e.g. 4,8,16")
        if args.utilization:
            report_utilization(cfg, args, argv)
        elif args.retrain:
            retrain(cfg, args, argv)
        elif args.tokenizers:
            compare_tokenizers(cfg, args)
        else:
            run(cfg, args, argv)


def run(cfg, args, argv):
    devices.seed_everything(cfg.seed)
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    entries = load_priors(cfg, device)
    if args.sweep or args.report:  # fail now, not after the speed runs
        metrics.load_classifier(metrics.classifier_path(cfg), device, datasets.spec_of(cfg.data))
    machine = describe_machine(device, dtype)
    print(machine)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    sampling_speeds, train, timed_tokenizers = {}, {}, set()
    for entry in entries:
        prior, vqvae = entry["prior"], entry["vqvae"]
        if prior.kv_cache:  # with and without it
            sampling_speeds[entry["label"]] = {scale: sampling_speed(prior, vqvae, device, dtype, batch_sizes, args.repeats,
                                                                     scale)
                                                  for scale in sorted({1.0, settings.sampling_settings(cfg, prior)[1]})}
            for scale, rows in sampling_speeds[entry["label"]].items():
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
    first = entries[0]  # the sweep's prior: the first in config.py's order
    temperatures = [float(t) for t in args.temperatures.split(",")]
    sweep = temperature_sweep(first["prior"], first["vqvae"], cfg, device, dtype, temperatures, args.n)
    # --report: beside the report (_writeup_images/[<dataset>/]), so the report's relative link finds it
    own_folder = "" if cfg.data.dataset == "folder" else datasets.spec_of(cfg.data).folder  # folder: out is its own
    plot_path = os.path.join(os.path.dirname(args.out), "_writeup_images", own_folder,
                             "temperature_sweep.png") if args.report else \
        os.path.join(cfg.results_dir, "benchmark", "temperature_sweep.png")
    figures.plot_sweep(sweep, plot_path)
    print(f"sweep plot: {plot_path}")
    if args.report:
        references = compare_priors(entries, cfg, device, dtype, args.n, args.steps)
        spec = datasets.spec_of(cfg.data)
        run_facts = {"command": f"python benchmark.py {' '.join(argv)}", "machine": machine, "spec": spec,
                     "classifier": os.path.relpath(metrics.classifier_path(cfg)), "n": args.n,
                     "batch_size": cfg.sample.batch_size,
                     "plot": os.path.relpath(plot_path, os.path.dirname(os.path.abspath(args.out)))}
        text = report.dataset_section(run_facts, entries, references, sampling_speeds, train, sweep)
        report.write_section(args.out, spec.name, spec.title, text)
        print(f"report: {args.out}")


# --- tokenizers side by side -----------------------------------------------------------------------------------------

TOKENIZER_COLUMNS = ["tokenizer", "tokens", "codes", "bits per token", "val MSE", "PSNR (dB)", "SSIM",
                     "code use / perplexity", "reconstructions FID", "read right", "training seconds"]
PICTURE_IMAGES = 12  # test images in the side-by-side picture


def picture_label(vqvae_cfg, stats):
    """A row name that tells two tokenizers of one quantizer apart: the SSIM term, and how a multi-scale codebook
    counts its scales."""
    extras = [f"+ SSIM {vqvae_cfg.ssim_weight:g}"] if vqvae_cfg.ssim_weight > 0 else []
    if vqvae_cfg.scales:
        extras.append(f"per {vqvae_cfg.scale_weighting[:-1]}")
    return " ".join([f"{stats['quantizer']} {stats['tokens']}, {stats['codes']}", *extras])


def compare_tokenizers(cfg, args):
    """--tokenizers: each checkpoint judged as evaluate.py --reconstructions judges it, one table row each."""
    if args.picture:
        sampling.check_writable(args.picture)
    device = devices.pick_device(cfg.device)
    spec = datasets.spec_of(cfg.data)
    classifier = metrics.load_classifier(metrics.classifier_path(cfg), device, spec)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    _, test_feats = metrics.classify(classifier, test_images, device)
    rows, shown, names = [], [test_images[:PICTURE_IMAGES]], ["test images"]
    for path in args.tokenizers:
        vqvae, ckpt = load_vqvae(path, device, dataset=spec.name)
        recon, score, stats = tokenizer_metrics.judge(vqvae, classifier, test_images, test_labels, test_feats, device)
        use = " ".join(f"{u:.0%}/{p:.0f}" for u, p in zip(stats["usage"], stats["perplexity"]))
        rows.append([f"{stats['quantizer']} ({path})", stats["tokens"], stats["codes"], f"{stats['bits_per_token']:.2f}",
                     f"{stats['val_mse']:.5f}", f"{stats['psnr']:.2f}", f"{stats['ssim']:.4f}", use,
                     f"{score['fid']:.2f}", f"{score['accuracy']:.2%}", f"{ckpt['history'][-1]['seconds']:.0f}"])
        shown.append(recon[:PICTURE_IMAGES])
        names.append(picture_label(vqvae.cfg, stats))
    print(report.table(TOKENIZER_COLUMNS, rows))
    if args.picture:
        figures.save_image_grid(data.to_model_range(torch.cat(shown)), args.picture, nrow=PICTURE_IMAGES,
                                row_names=names)
        print(f"picture: {args.picture}")


# --- a preset's recipe retrained -------------------------------------------------------------------------------------

def retrain(cfg, args, argv):
    """--retrain: what a user gets from the preset's two training commands, measured (recipe.py)."""
    if cfg.vqvae.scales:
        raise FlagError("--retrain trains a preset's single-scale tokenizer and its GPT; "
                        "pick a preset without vqvae.scales")
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    spec = datasets.spec_of(cfg.data)
    classifier = metrics.load_classifier(metrics.classifier_path(cfg), device, spec)  # fail now, not after training
    overrides = [*args.overrides, *recipe.retrain_overrides(cfg.preset, args.overrides)]
    retrained = settings.build_config(args.preset, overrides, args.seed, args.device)
    recipe.train(["--preset", args.preset, *[f for o in overrides for f in ("--set", o)],
                  *(["--seed", str(args.seed)] if args.seed is not None else []),
                  *(["--device", args.device] if args.device else [])])
    prior, vqvae, gpt_ckpt = load_pair(default_path(retrained, "gpt"), None, device, dataset=spec.name)
    test_images, test_labels = data.load_split(cfg.data, train=False)
    _, reference = metrics.classify(classifier, test_images, device)
    recon = metrics.reconstructions(vqvae, test_images[:args.n], device)
    scores = {"ceiling": metrics.score(classifier, recon, test_labels[:args.n], reference, device),
              "gpt": quality_row({"prior": prior, "vqvae": vqvae, "label": "GPT"}, classifier, reference, retrained,
                                 device, dtype, args.n),
              "gpt_history": gpt_ckpt["history"], "n": args.n,
              "classifier": os.path.relpath(metrics.classifier_path(cfg))}
    run_facts = {"command": f"python benchmark.py {' '.join(argv)}", "preset": cfg.preset,
                 "machine": (f"{describe_machine(device, dtype)}; the tokenizer in "
                             f"{report.dtype_name(devices.amp_dtype(device, cfg.amp, tokenizer_training=True))}"),
                 "folder": os.path.relpath(retrained.checkpoint_dir), "recipe": recipe.in_words(retrained)}
    text = report.recipe_section(run_facts, recipe.tokenizer_epochs(retrained), scores)
    print(text)
    if args.report:
        report.write_section(args.out, f"retrain-{cfg.preset}", f"{spec.title}: the {cfg.preset} recipe retrained",
                             text)
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
        for scale in sorted({1.0, settings.sampling_settings(cfg, prior)[1]}):
            median, _ = timed(lambda: draw_images(prior, vqvae, classes, device, dtype, guidance=scale,
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


def report_utilization(cfg, args, argv):
    device = devices.pick_device(cfg.device)
    dtype = devices.amp_dtype(device, cfg.amp)
    machine = describe_machine(device, dtype)
    print(machine)
    batch = int(args.batch_sizes.split(",")[-1])
    found, rows = measure_utilization(cfg, device, dtype, batch, args.repeats)
    print("matmul peak: " + report.peaks_text(found))
    command = "python benchmark.py " + " ".join(argv)
    tokenizer_dtype = devices.amp_dtype(device, cfg.amp, tokenizer_training=True)
    text = report.utilization_section(command, machine, args.repeats, found, rows, dtype, tokenizer_dtype)
    report.write_section(args.out, f"utilization-{device.type}",
                         f"Utilization ({cfg.data.dataset} config, {device.type})", text)
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
