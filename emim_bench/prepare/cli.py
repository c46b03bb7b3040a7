"""``emim-bench prepare DATASET --source PATH``: argument handling; the work is imported lazily."""

from __future__ import annotations

import argparse
import sys

DATASETS = ("imagenet100",)


def register(subparsers) -> None:
    """Add the ``prepare`` subcommand and its handler to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "prepare",
        help="build a dataset's folder under the data root from a source copy (ImageNet-100)",
        description="Build <data_root>/imagenet100/{train,val}/<wnid>/ for the 100 classes of "
        "CMC's ImageNet-100 list from an ImageNet copy: symbolic links to its images, or copies "
        "with --copy. SOURCE holds train/<wnid>/ and either val/<wnid>/ or the official flat "
        "val/ folder with a ground truth (Kaggle's LOC_val_solution.csv, or the devkit's "
        "ILSVRC2012_validation_ground_truth.txt with meta.mat beside it). Running it again on "
        "a complete tree does nothing.",
    )
    parser.add_argument(
        "dataset", choices=DATASETS, metavar="DATASET", help="imagenet100 (the only one so far)"
    )
    parser.add_argument(
        "--source", required=True, metavar="PATH", help="ImageNet folder holding train/ and val/"
    )
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="PATH",
        help="where the dataset folder goes (default: the config's data_root, "
        "$EMIM_BENCH_DATA or ../shared/data)",
    )
    parser.add_argument(
        "--val-labels",
        default=None,
        metavar="PATH",
        help="ground truth of a flat val/ folder (default: LOC_val_solution.csv or "
        "ILSVRC2012_validation_ground_truth.txt found in SOURCE or up to three folders above)",
    )
    parser.add_argument(
        "--copy", action="store_true", help="copy the images instead of linking to them"
    )
    parser.set_defaults(handler=_prepare_command)


def _prepare_command(args: argparse.Namespace) -> int:
    from emim_bench.prepare import imagenet100

    try:
        plan = imagenet100.plan(args.source, val_labels=args.val_labels)
        destination = imagenet100.destination(args.data_root)
        if plan.val_labels is not None:
            val = f"flat val/, classes from {plan.val_labels}"
        else:
            val = "val/ in class folders"
            if args.val_labels:
                val += "; --val-labels not used"
        print(f"source: {plan.source} ({val})")
        for line in plan.summary():
            print(line)
        built = imagenet100.build(plan, destination, copy=args.copy)
    except (imagenet100.PrepareError, OSError) as error:
        print(f"emim-bench prepare: error: {error}", file=sys.stderr)
        return 2
    if built:
        print(f"{'copied' if args.copy else 'linked'} the images into {destination}")
    else:
        print(f"{destination} already holds this tree: nothing to do")
    root = f" data_root={destination.parent}" if args.data_root else ""
    print(f"train with: emim-bench pretrain data=imagenet100{root}")
    return 0
