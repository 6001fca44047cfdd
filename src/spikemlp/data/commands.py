"""``spikemlp data ...``: check, download and locate data sets from the command line."""

from __future__ import annotations

import argparse

from .check import check_dataset, format_report
from .errors import DataError
from .fetch import download
from .info import DATASET_INFO, get_info
from .locations import find_data_dir, search_locations


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory holding the data set (or its folder); default: $SPIKEMLP_DATA, ./data, "
        "~/.cache/spikemlp, /usr/share/datasets, ../shared/data",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    names = ", ".join(DATASET_INFO)
    data = subparsers.add_parser("data", help="check, download and locate data sets")

    def _help(_args: argparse.Namespace) -> int:
        data.print_help()
        return 0

    data.set_defaults(func=_help)
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    check = sub.add_parser(
        "check",
        help="where a data set is, its split sizes, images per class, md5 per file, problems",
        description="Find data set NAME, read every split and report. Exit status 0 when it is usable.",
    )
    check.add_argument("name", metavar="NAME", help=f"one of: {names}")
    _add_common(check)
    check.add_argument("--download", action="store_true", help="fetch the official files first if missing")
    check.add_argument(
        "--verify-images", action="store_true", help="decode every image of the folder data sets (slow)"
    )
    check.set_defaults(func=_check)

    dl = sub.add_parser("download", help="fetch a data set's official files into the data directory")
    dl.add_argument("name", metavar="NAME", help=f"one of: {names}")
    dl.add_argument(
        "--data-dir", metavar="DIR", help="where to put it (default: $SPIKEMLP_DATA, else ~/.cache/spikemlp)"
    )
    dl.set_defaults(func=_download)

    where = sub.add_parser("list", help="every known data set and where it was found")
    _add_common(where)
    where.set_defaults(func=_list)


def _check(args: argparse.Namespace) -> int:
    if args.download:
        try:
            find_data_dir(args.name, args.data_dir)
        except DataError:
            download(args.name, args.data_dir)
    report = check_dataset(args.name, args.data_dir, verify_images=args.verify_images)
    print(format_report(report))
    return 0 if report.usable else 1


def _download(args: argparse.Namespace) -> int:
    folder = download(args.name, args.data_dir)
    print(f"{get_info(args.name).name}: ready at {folder}")
    return 0


def _list(args: argparse.Namespace) -> int:
    print("searched: " + ", ".join(f"{label} ({path})" for label, path in search_locations(args.data_dir)))
    width = max(len(n) for n in DATASET_INFO)
    for name in DATASET_INFO:
        try:
            where = str(find_data_dir(name, args.data_dir))
        except DataError as err:
            where = (
                f"incomplete (see: spikemlp data check {name})" if "incomplete" in str(err) else "not found"
            )
        print(f"{name:<{width}}  {where}")
    return 0
