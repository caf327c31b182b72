"""How fast the embedded dataset is generated and loaded, in images/s, at 256 and 512 px.

    python benchmarks/data_rate.py --out benchmarks/results/data_rate.json   # or: make bench

- generate: ``maskx.data.embedded.generate`` (render, JPEG-encode, RLE-encode, write), with
  1 worker and with 2 workers (``make demo`` uses 2);
- load: ``CocoDataset.__getitem__`` over the generated folder under the voc2nonvoc split
  (JPEG decode to a float tensor, set-A RLE masks decoded, set-B masks left zero), one
  process, median of ``--load-passes`` full passes; with 1 torch thread (what a DataLoader
  worker uses) and with torch's default thread count;
- train: ``maskx.train.run_training`` (the real loop: DataLoader with ``num_workers`` = 1 loading
  ahead, 2 torch threads) of the study's Mask^X R-CNN (``transfer_clsbox_2lrelu_mlp_e2e`` with the
  study scale's settings, EfficientNet-Lite0, batch 2) on the same folder, ``--train-steps``
  steps from a random-init head; images/s from the median logged step time after 2 warm-up
  steps. The ratio load / train has a target of >= 5x: one loader worker must keep far ahead of
  training, so that data loading never stalls a step.

Everything is written to a temporary folder that is removed afterwards. Writes the results as
JSON (atomically) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Only the generator at import time: the 2-worker pool spawns processes that re-import this
# file, and importing torch there would be counted as generation time.
from maskx.data.embedded import GENERATOR_VERSION, generate

# (image size, images generated) — sized so the whole run stays well under 2 minutes on 2 cores
DEFAULT_IMAGES = {256: 200, 512: 60}


def train_rate(data_dir: Path, size: int, steps: int, work: Path) -> dict:
    """Training images/s of the study's Mask^X R-CNN on ``data_dir`` at ``size`` px (median step)."""
    import torch

    from maskx_study.plan import SCALES, Run
    from maskx.train import read_log, run_training

    scale = SCALES["study"]  # the study's run config, from a random-init head (no detector to start from)
    config = Run("transfer_clsbox_2lrelu_mlp_e2e", "voc2nonvoc", 0, scale.backbone).config(scale).replace(
        detector=None, mask_init=None, image_size=size, iters=steps, checkpoint_every=10 ** 6)
    threads = torch.get_num_threads()
    run_training(config, data_dir, work / f"train-{size}", progress=False)
    secs = [r["sec"] for r in read_log(work / f"train-{size}" / "log.jsonl")][2:]
    step = statistics.median(secs)
    return {"train_steps_timed": len(secs), "train_step_s": round(step, 3), "train_threads": threads,
            "train_batch": config.batch_size, "train_images_per_s": round(config.batch_size / step, 3),
            "train_num_workers": config.num_workers}


def bench_size(root: Path, size: int, images: int, load_passes: int, train_steps: int = 0) -> dict:
    import torch

    from maskx.data.coco import CocoDataset
    from maskx.data.splits import resolve_split

    gen, gen_cpu = {}, None
    for workers in (1, 2):
        out = root / f"{size}px-w{workers}"
        t0, c0 = time.perf_counter(), time.process_time()
        summary = generate(out, images, seed=0, image_size=size, workers=workers)
        gen[workers] = images / (time.perf_counter() - t0)
        if workers == 1:  # all the work is in this process: CPU time is meaningful
            gen_cpu = images / (time.process_time() - c0)
    data_dir = root / f"{size}px-w1"
    full = CocoDataset.from_dir(data_dir)
    split = resolve_split("voc2nonvoc", full.data["categories"],
                          voc_like_ids=full.data["info"]["voc_like_category_ids"])
    ds = CocoDataset.from_dir(data_dir, mask_category_ids=split.a_ids)
    load, load_cpu = {}, {}
    default_threads = torch.get_num_threads()
    for threads in (1, default_threads):
        torch.set_num_threads(threads)
        rates, cpu_rates = [], []
        for _ in range(load_passes):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(len(ds)):
                ds[i]
            rates.append(len(ds) / (time.perf_counter() - t0))
            cpu_rates.append(len(ds) / (time.process_time() - c0))
        load[threads], load_cpu[threads] = statistics.median(rates), statistics.median(cpu_rates)
    torch.set_num_threads(default_threads)
    train = train_rate(data_dir, size, train_steps, root) if train_steps else {}
    if train:  # the loader's rate over training's, both wall clock (target >= 5)
        train["load_over_train"] = round(load[1] / train["train_images_per_s"], 1)
    return {
        "image_size": size,
        "images": images,
        "instances": summary["instances"],
        "instances_with_mask_voc2nonvoc": ds.summary["with_mask"],
        "generate_images_per_s_1_worker": round(gen[1], 2),
        "generate_images_per_s_2_workers": round(gen[2], 2),
        # torch intra-op threads = 1, as in a DataLoader worker
        "load_images_per_s": round(load[1], 1),
        # torch's default thread count (see "machine"); slows down sharply when other
        # processes compete for the cores
        "load_images_per_s_default_threads": round(load[default_threads], 1),
        # per second of this process's CPU time (all its threads): less sensitive to other
        # processes sharing the cores than the wall-clock rates above
        "generate_images_per_cpu_s_1_worker": round(gen_cpu, 2),
        "load_images_per_cpu_s": round(load_cpu[1], 1),
        "load_passes": load_passes,
        **train,
    }


def table(results: list[dict]) -> str:
    rows = ["| px | images | generate, 1 worker | generate, 2 workers | load, 1 thread | load, default threads "
            "| generate per CPU-s | load per CPU-s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r['image_size']} | {r['images']} | {r['generate_images_per_s_1_worker']:.1f} "
                    f"| {r['generate_images_per_s_2_workers']:.1f} | {r['load_images_per_s']:.0f} "
                    f"| {r['load_images_per_s_default_threads']:.0f} "
                    f"| {r['generate_images_per_cpu_s_1_worker']:.1f} | {r['load_images_per_cpu_s']:.0f} |")
    rows.append("")
    rows.append("images/s. Wall clock, except the last two columns: per second of the benchmark process's "
                "CPU time (1 worker, 1 torch thread).")
    trained = [r for r in results if "train_images_per_s" in r]
    if trained:
        rows += ["", "| px | train step (s, batch 2) | train images/s | load images/s (1 thread) | load / train "
                 "| target >= 5 |", "|---:|---:|---:|---:|---:|---|"]
        for r in trained:
            rows.append(f"| {r['image_size']} | {r['train_step_s']:.2f} | {r['train_images_per_s']:.2f} "
                        f"| {r['load_images_per_s']:.0f} | {r['load_over_train']:.0f}x "
                        f"| {'met' if r['load_over_train'] >= 5 else 'NOT met'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the results JSON here")
    p.add_argument("--sizes", type=int, nargs="+", default=sorted(DEFAULT_IMAGES))
    p.add_argument("--images", type=int, help="images per size (default: 200 at 256 px, 60 at 512 px)")
    p.add_argument("--load-passes", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=8,
                   help="training steps timed per size (the first 2 are warm-up; 0: skip training)")
    args = p.parse_args(argv)
    import torch

    from maskx.atomic import write_json_atomic

    results = []
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="maskx-bench-") as tmp:
        for size in args.sizes:
            n = args.images or DEFAULT_IMAGES.get(size, 16)
            results.append(bench_size(Path(tmp), size, n, args.load_passes, args.train_steps))
            print(f"{size} px done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    report = {
        "benchmark": "data_rate",
        "command": " ".join(["python", "benchmarks/data_rate.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "generator_version": GENERATOR_VERSION,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform()},
        "total_seconds": round(time.perf_counter() - t_start, 1),
        # the machine's 1-minute load average: other processes on the same cores slow every rate
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "results": results,
    }
    if args.out:
        write_json_atomic(report, args.out)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
