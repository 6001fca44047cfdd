"""Data pipeline speed: CIFAR-10 load time and TensorBatchLoader throughput against per-image torchvision.

Measures, in one run on this machine:
- reading the CIFAR-10 train and test splits into tensors (``load_split``);
- ``TensorBatchLoader`` images/s for full epochs: normalisation only, and random crop (padding 4) +
  horizontal flip + normalisation at several batch sizes (CPU, and CUDA when present);
- the usual per-image torchvision pipelines on a subset, for a side-by-side ratio: PIL
  (ToPILImage, RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize) and tensor transforms v2.

Prints one JSON object and a one-line summary; asserts nothing.
Usage: python benchmarks/bench_data.py [--threads 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from spikemlp.data import DATASET_INFO, TensorBatchLoader, load_split


def _best_rate(run, repeats: int) -> tuple[float, float]:
    """(best, median) images per second over ``repeats`` calls of ``run() -> images``. The best is the
    figure least disturbed by other processes on a shared machine; the median shows the spread."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - start))
    rates.sort()
    return rates[-1], rates[len(rates) // 2]


def _epoch(loader: TensorBatchLoader) -> int:
    n = 0
    for x, _y in loader:
        n += x.shape[0]
    if loader.device.type == "cuda":
        torch.cuda.synchronize()
    return n


def _per_image(images: torch.Tensor, transform, count: int) -> int:
    """A per-image transform over ``count`` images, stacked by 128 (what a DataLoader's collate does)."""
    batch = []
    for i in range(count):
        batch.append(transform(images[i]))
        if len(batch) == 128:
            torch.stack(batch)
            batch = []
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: the usual search)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loader configuration")
    parser.add_argument("--per-image", type=int, default=2000, help="images per timed per-image run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    train = load_split("cifar10", "train", args.data_dir)
    load_train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_split("cifar10", "test", args.data_dir)
    load_test_s = time.perf_counter() - t0

    info = DATASET_INFO["cifar10"]
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        # other processes on the machine slow multi-threaded small ops a lot: record how busy it was
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "cifar10_load_train_s": round(load_train_s, 3),
        "cifar10_load_test_s": round(load_test_s, 3),
        "loader_images_per_s": {},  # best of --repeats
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rates = results["loader_images_per_s"]
    medians = results["loader_images_per_s_median"] = {}
    for device in devices:
        configs = [("normalise only, batch 128", dict(batch_size=128, augment=False))]
        configs += [(f"crop+flip, batch {b}", dict(batch_size=b, augment=True)) for b in (128, 256, 512)]
        if device == "cpu":  # the default builds batches on 1 thread; this one on all torch threads
            configs.append(
                ("crop+flip, batch 128, threads=None", dict(batch_size=128, augment=True, threads=None))
            )
        for label, kw in configs:
            loader = TensorBatchLoader(train, shuffle=True, device=device, seed=0, **kw)
            _epoch(loader)  # warm-up
            best, median = _best_rate(lambda loader=loader: _epoch(loader), args.repeats)
            rates[f"{device}: {label}"], medians[f"{device}: {label}"] = round(best), round(median)

    import torchvision.transforms as T
    import torchvision.transforms.v2 as T2

    pil = T.Compose(
        [
            T.ToPILImage(),
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(info.mean, info.std),
        ]
    )
    v2 = T2.Compose(
        [
            T2.RandomCrop(32, padding=4),
            T2.RandomHorizontalFlip(),
            T2.ToDtype(torch.float32, scale=True),
            T2.Normalize(info.mean, info.std),
        ]
    )
    for label, transform in (("per-image torchvision PIL pipeline", pil), ("per-image torchvision v2", v2)):
        best, median = _best_rate(
            lambda t=transform: _per_image(train.images, t, args.per_image), args.repeats
        )
        rates[label], medians[label] = round(best), round(median)

    ours = rates["cpu: crop+flip, batch 128"]
    results["ratio_vs_per_image_pil"] = round(ours / rates["per-image torchvision PIL pipeline"], 1)
    results["ratio_vs_per_image_v2"] = round(ours / rates["per-image torchvision v2"], 1)
    print(json.dumps(results, indent=2))
    print(
        f"summary: CIFAR-10 train loads in {load_train_s:.2f} s; TensorBatchLoader crop+flip batch 128 on "
        f"{torch.get_num_threads()} CPU threads: {ours:,} images/s "
        f"({results['ratio_vs_per_image_pil']}x per-image PIL, "
        f"{results['ratio_vs_per_image_v2']}x per-image v2)"
    )


if __name__ == "__main__":
    main()
