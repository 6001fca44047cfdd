"""``spikemlp data check``: is a data set where expected, complete, readable, and the official copy?

``check_dataset`` reads every split with the same readers training uses and gathers what a person wants
to know before training: where the data was found, split sizes and image shape, images per class, an
md5 per file compared with the official release where the sum is known (a difference is information:
re-built or re-packed copies can be fine), and the problems that make the data unusable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .fetch import md5_of
from .folders import ImageFileDataset, open_rgb
from .info import DatasetInfo, get_info
from .load import load_split
from .locations import find_data_dir, search_locations


@dataclass
class SplitReport:
    size: int
    image_shape: tuple[int, ...]
    classes: list[str]
    counts: list[int]


@dataclass
class FileReport:
    name: str
    md5: str | None  # None: not summed (image files of the folder data sets)
    official: str | None

    @property
    def status(self) -> str:
        if self.md5 is None:
            return "not summed"
        if self.official is None:
            return "no official sum known"
        if self.md5 == self.official:
            return "matches the official release"
        return f"differs from the official {self.official} (information only)"


@dataclass
class CheckReport:
    name: str
    folder: Path
    searched: list[tuple[str, Path]]
    splits: dict[str, SplitReport] = field(default_factory=dict)
    files: list[FileReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems


def _file_reports(info: DatasetInfo, folder: Path) -> list[FileReport]:
    if info.in_memory:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    else:  # the many image files are counted per class, not summed; the index files are
        names = [n for n in ("wnids.txt", "words.txt", "val/val_annotations.txt") if (folder / n).is_file()]
    return [FileReport(n, md5_of(folder / n), info.official_md5.get(n)) for n in names]


def _verify_images(ds: ImageFileDataset, problems: list[str]) -> None:
    bad = []
    for path, _ in ds.samples:
        try:
            open_rgb(path)
        except DataError as err:
            bad.append(str(err))
    if bad:
        problems.append(f"{len(bad)} unreadable image(s) in the {ds.split} split, e.g. {bad[0]}")


def check_dataset(
    name: str, data_dir: str | os.PathLike | None = None, verify_images: bool = False
) -> CheckReport:
    """Check data set ``name`` where ``find_data_dir`` finds it. ``verify_images`` decodes every image of the
    folder data sets (slow for ImageNet); otherwise only each split's first is opened, for its size."""
    info = get_info(name)
    folder = find_data_dir(info.name, data_dir)
    report = CheckReport(info.name, folder, search_locations(data_dir))
    report.files = _file_reports(info, folder)
    if info.in_memory:
        expected = {f for files in info.split_files.values() for f in files}
        present = {f.name for f in report.files}
        extra = sorted(
            n for n in present if n not in expected and n.removesuffix(".gz") + ".gz" not in expected
        )
        if extra:
            report.notes.append(f"extra files in the folder (not read): {', '.join(extra)}")
    for split in ("train", "test"):
        try:
            data = load_split(info.name, split, folder)
        except DataError as err:
            report.problems.append(f"{split} split: {err}")
            continue
        if isinstance(data, ImageFileDataset):
            first = open_rgb(data.samples[0][0])
            shape = (3, first.height, first.width)
            if verify_images:
                _verify_images(data, report.problems)
        else:
            shape = tuple(data.images.shape[1:])
        counts = data.class_counts()
        report.splits[split] = SplitReport(len(data), shape, list(data.classes), counts)
        empty = [c for c, n in zip(data.classes, counts, strict=True) if n == 0]
        if empty:
            report.notes.append(f"{split} split: {len(empty)} class(es) without images, e.g. {empty[0]!r}")
    if info.name == "tiny_imagenet" and "train" in report.splits:
        n = len(report.splits["train"].classes)
        if n != info.num_classes:
            report.notes.append(f"{n} classes (a subset of Tiny-ImageNet-200's {info.num_classes})")
    return report


def _counts_lines(report: CheckReport) -> list[str]:
    train, test = report.splits.get("train"), report.splits.get("test")
    ref = train or test
    if ref is None:
        return []
    n_classes = len(ref.classes)
    header = "  images per class (" + "/".join(s for s in ("train", "test") if s in report.splits) + "):"
    if n_classes <= 20:
        lines = [header]
        width = max(len(c) for c in ref.classes)
        for i, c in enumerate(ref.classes):
            nums = "/".join(f"{r.counts[i]:,}" for r in (train, test) if r is not None)
            lines.append(f"    {i:3d} {c:<{width}}  {nums}")
        return lines
    lines = [header + f" {n_classes} classes"]
    for split, r in (("train", train), ("test", test)):
        if r is not None:
            lo, hi = min(r.counts), max(r.counts)
            same = " (every class)" if lo == hi else ""
            lines.append(f"    {split}: min {lo:,}, max {hi:,}{same}")
    return lines


def format_report(report: CheckReport) -> str:
    """The report as ``spikemlp data check`` prints it."""
    lines = [f"{report.name}: found at {report.folder}"]
    for split, r in report.splits.items():
        shape = "x".join(str(s) for s in r.image_shape)
        lines.append(f"  {split}: {r.size:,} images of {shape}, {len(r.classes)} classes")
    lines += _counts_lines(report)
    if report.files:
        lines.append("  files (md5):")
        width = max(len(f.name) for f in report.files)
        for f in report.files:
            lines.append(f"    {f.name:<{width}}  {f.md5}  {f.status}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    if report.problems:
        lines.append(f"  problems ({len(report.problems)}):")
        lines += [f"    - {p}" for p in report.problems]
        lines.append("  result: NOT usable")
    else:
        lines += ["  problems: none", "  result: usable"]
    return "\n".join(lines)
