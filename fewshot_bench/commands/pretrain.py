"""``fewshot-bench pretrain``: supervised pretraining of a backbone on the meta-train classes (stage 1)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fewshot_bench.backbones.checkpoint import backbone_options, convert_options
from fewshot_bench.backbones.pretrain import PretrainConfig, pretrain
from fewshot_bench.commands.common import (
    add_image_options,
    host_from_args,
    print_json,
    print_table,
    progress_enabled,
    use_image_threads,
)
from fewshot_bench.config import apply_overrides, parse_assignments
from fewshot_bench.data.images import ImageSpec, detect_layout, load_images
from fewshot_bench.errors import ConfigError
from fewshot_bench.records.provenance import resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` parser."""
    p = sub.add_parser("pretrain", help="pretrain a feature backbone on the meta-train classes", description=__doc__)
    p.add_argument("--backbone", required=True, help="backbone name: conv4, resnet12, wrn-28-10 or a plugin's")
    add_image_options(p)
    p.add_argument("--out", type=Path, help="checkpoint path (default: <backbone>-<layout>.pt); resumed if it exists")
    p.add_argument("--epochs", type=int, help=f"training epochs (default {PretrainConfig.epochs})")
    p.add_argument("--image-size", type=int, help="network input side in pixels (default 28 Omniglot, 84 folders)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a pretraining setting (lr, momentum, nesterov, weight_decay, lr_milestones, lr_gamma, "
                        "shift, flip, label_smoothing, seed) or a backbone option (e.g. width, widen, depth, dropout)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint at --out and start afresh")
    p.set_defaults(handler=handle)


def split_overrides(raw: dict[str, str], factory, backbone: str) -> tuple[dict[str, str], dict[str, str]]:
    """Separate ``--set`` items into pretraining settings and backbone options."""
    config_keys = {f.name for f in dataclasses.fields(PretrainConfig)}
    model_keys = set(backbone_options(factory))
    unknown = [k for k in raw if k not in config_keys | model_keys]
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r}; pretraining settings: {', '.join(sorted(config_keys))}; "
            f"options of backbone {backbone}: {', '.join(sorted(model_keys))}"
        )
    return ({k: v for k, v in raw.items() if k in config_keys}, {k: v for k, v in raw.items() if k in model_keys})


def handle(args: argparse.Namespace) -> int:
    """Load the train split, pretrain (or resume), and report the last epoch."""
    host = host_from_args(args)
    factory = host.backbone(args.backbone)
    device = resolve_device(args.device)
    threads = use_image_threads(args, device, f"pretraining {args.backbone}")
    config_raw, model_raw = split_overrides(parse_assignments(args.overrides), factory, args.backbone)
    for key in ("epochs", "batch_size"):
        if getattr(args, key) is not None:
            config_raw[key] = str(getattr(args, key))
    config = apply_overrides(PretrainConfig(), config_raw, learner="pretrain")
    options = convert_options(factory, args.backbone, model_raw)
    layout = detect_layout(args.data_dir) if args.images == "auto" else args.images
    spec = ImageSpec.for_layout(layout, image_size=args.image_size)
    progress = progress_enabled(args)
    data = load_images(args.data_dir, layout, spec, ["train"], args.max_classes, args.max_images, progress)
    out = args.out or Path(f"{args.backbone}-{layout}.pt")
    ckpt = pretrain(factory, args.backbone, options, data.split("train"), spec, layout, config, out,
                    device=device, restart=args.restart, progress=progress)
    hist = ckpt["history"]
    summary = {
        "checkpoint": str(out),
        "backbone": args.backbone,
        "classes": len(ckpt["classes"]),
        "images": len(data.split("train")),
        "epochs": ckpt["epoch"],
        "first_loss": hist[0]["loss"] if hist else None,
        "final_loss": hist[-1]["loss"] if hist else None,
        "final_train_accuracy": hist[-1]["accuracy"] if hist else None,
        "seconds": sum(h["seconds"] for h in hist),
        "threads": threads,
    }
    if args.json:
        print_json(summary)
    else:
        print_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}])
    return 0
