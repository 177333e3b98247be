"""``fewshot-bench embed``: export a pretrained backbone's features for every split (LEO layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot_bench.backbones.embed import FORMATS, export_features
from fewshot_bench.commands.common import (
    add_image_options,
    host_from_args,
    print_json,
    print_table,
    progress_enabled,
    use_image_threads,
)
from fewshot_bench.records.provenance import resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``embed`` parser."""
    p = sub.add_parser(
        "embed",
        help="export features of images with a pretrained backbone",
        description=__doc__ + " A folder of bare class subfolders is exported as one split, 'test'.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint made by `fewshot-bench pretrain`")
    p.add_argument("--backbone", help="check that the checkpoint holds this backbone")
    add_image_options(p)
    p.add_argument("--out", type=Path, required=True, help="folder for <split>_embeddings.<format>")
    p.add_argument("--split", dest="splits", action="append", metavar="NAME",
                   help="export only this split (repeatable; default: every split found)")
    p.add_argument("--format", choices=FORMATS, default="npz", help="npz (default) or pkl (LEO's pickle layout)")
    p.add_argument("--overwrite", action="store_true", help="replace features already in --out")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Embed and write every split, then list what was written."""
    host = host_from_args(args)
    device = resolve_device(args.device)
    use_image_threads(args, device, "embedding images")
    manifest = export_features(
        args.checkpoint,
        host.backbone,
        args.data_dir,
        args.out,
        layout=args.images,
        splits=args.splits,
        backbone=args.backbone,
        fmt=args.format,
        overwrite=args.overwrite,
        batch_size=args.batch_size or 256,
        device=device,
        max_classes=args.max_classes,
        max_images=args.max_images,
        progress=progress_enabled(args),
    )
    if args.json:
        print_json({"out": str(args.out), **manifest})
    else:
        print_table([{"split": k, **v} for k, v in manifest["splits"].items()])
        print("run a learner on them: fewshot-bench run --learner nearest-centroid --dataset features "
              f"--data-dir {args.out}")
    return 0
