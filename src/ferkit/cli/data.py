"""``ferkit data``: look at a dataset (class counts, imbalance, duplicates) and warm its cache."""

from __future__ import annotations

import argparse
import json
import time

from ferkit.data import images
from ferkit.data.audit import dataset_stats
from ferkit.data.cache import cache_dir
from ferkit.data.load import load_dataset
from ferkit.errors import DataError


def _add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path",
        metavar="PATH",
        help="a fer2013.csv file, a FER2013 folder tree (train|test/<class>/<Split>_<id>.png), or any "
        "class-folder tree such as AffectNet (<class>/*.jpg, optionally under train/val/test)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable files and malformed CSV rows and count them, instead of stopping at "
        "the first one",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="when the data has no PublicTest split, move this fraction of Training to PublicTest, "
        "stratified by class (default 0.1; 0 = off)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="random seed of that validation split (default 0)"
    )
    p.add_argument(
        "--max-file-mb",
        type=float,
        default=None,
        metavar="MB",
        help="treat image files larger than this as unreadable, without reading them (default 100)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="decode everything again, neither reading nor writing the cache in $FERKIT_CACHE_DIR "
        "(default ~/.cache/ferkit)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="inspect datasets: class counts, duplicates, cache",
        description="Inspect face datasets and warm their cache.",
    )
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    stats = sub.add_parser(
        "stats",
        help="counts per split and class, imbalance, duplicate images",
        description="Load a dataset and print, per split, the images per class, the total and the imbalance "
        "ratio (largest/smallest class); then pixel-identical duplicates within and across splits, "
        "groups whose copies disagree on the label, and what was skipped.",
    )
    _add_load_args(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON instead of tables")
    stats.set_defaults(func=cmd_stats)

    cache = sub.add_parser(
        "cache",
        help="decode a dataset into the cache and time a cached load",
        description="Build (or refresh) the on-disk cache for a dataset, then load it again from the cache; "
        "prints both times.",
    )
    _add_load_args(cache)
    cache.set_defaults(func=cmd_cache)


def _load(args: argparse.Namespace):

    if args.max_file_mb is not None:
        if not args.max_file_mb > 0:
            raise DataError(f"--max-file-mb must be positive, got {args.max_file_mb}")
        images.MAX_FILE_BYTES = int(args.max_file_mb * 2**20)  # this process's limit, for every loader
    return load_dataset(
        args.path,
        val_fraction=args.val_fraction,
        seed=args.seed,
        skip_bad=args.skip_bad,
        cache=not args.no_cache,
    )


def format_stats(stats: dict, title: str = "") -> str:
    """The tables ``ferkit data stats`` prints."""
    classes = stats["classes"]
    widths = [max(len(c), 6) for c in classes]
    head = (
        f"{'split':<12}"
        + "".join(f"{c:>{w + 1}}" for c, w in zip(classes, widths))
        + f"{'total':>8}{'max/min':>9}"
    )
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for name, s in stats["splits"].items():
        ratio = f"{s['imbalance_ratio']:.1f}" if s["imbalance_ratio"] is not None else "n/a"
        lines.append(
            f"{name:<12}"
            + "".join(f"{s['counts'][c]:>{w + 1}}" for c, w in zip(classes, widths))
            + f"{s['total']:>8}{ratio:>9}"
        )
        if s["missing_classes"]:
            lines.append(f"{'':<12} missing classes: {', '.join(s['missing_classes'])}")
    lines.append(f"{'all':<12}{'':>{sum(w + 1 for w in widths)}}{stats['total']:>8}")

    dup = stats["duplicates"]

    def row(name: str, d: dict) -> str:
        return (
            f"  {name:<26}{d['groups']:>7} groups {d['extra_copies']:>7} "
            f"extra copies {d['label_conflicts']:>5} "
            f"with conflicting labels"
        )

    lines += ["", "pixel-identical duplicates:", row("whole dataset", dup["all"])]
    lines += [row(f"within {s}", d) for s, d in dup["within"].items()]
    lines.append(row("spanning splits", dup["across"]))
    for pair, d in dup["between"].items():
        lines.append(
            f"  {pair:<26}{d['images']:>7} images in {d['groups']} groups, {d['label_conflicts']} with "
            f"conflicting labels"
        )
    skipped = stats["skipped"]
    lines += [
        "",
        "skipped: " + (", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) if skipped else "nothing"),
    ]
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:

    stats = dataset_stats(_load(args))
    stats["path"] = args.path
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats, title=f"{args.path}: {stats['total']} images"))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:

    if args.no_cache:
        raise DataError("`ferkit data cache` fills the cache; --no-cache makes no sense here")
    import warnings

    from ferkit.data.cache import CacheWriteWarning

    times = []
    for _ in range(2):  # the first load decodes (or finds an up-to-date entry), the second is a cached load
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter(
                "error", CacheWriteWarning
            )  # this command's one job (a load elsewhere warns)
            try:
                ds = _load(args)
            except CacheWriteWarning as w:
                raise DataError(str(w).removeprefix("ferkit: ")) from None
        times.append(time.perf_counter() - t0)
    print(
        f"{args.path}: {len(ds)} images; first load {times[0]:.2f} s, cached load {times[1]:.3f} s "
        f"(cache: {cache_dir()})"
    )
    return 0
