"""`jepa-lite`: pretrain and probe from the command line.

    jepa-lite train [--data shapes|cifar10|stl10|imagefolder:PATH] [--model tiny|small|...]
                    [--budget-minutes N | --epochs N | --steps N] --out DIR
    jepa-lite probe --checkpoint DIR_OR_FILE [--data D] [--test-data D2] [--layers K]

Every `train` flag is a field of `jepa_lite.train.TrainConfig` (same name, dashes for
underscores), so the defaults live in one place.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from .errors import JepaLiteError, TrainingStopped
from .train import DATA_DEFAULTS, TrainConfig

_HIDDEN = {"mask"}     # set through --mask key=value


def _base_type(hint) -> type:
    """The type a flag parses to: `int | None` -> int, `float` -> float."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)][0]
    return hint


_FIELD_HELP = {
    "workers": "CPU processes that share each batch, one thread each (jepa_lite.distributed); default 0 = auto: "
               "2 on a CPU with >= 2 usable cores for runs of >= 200 steps or >= 1 minute, else 1",
    "amp": "precision: auto (bf16 on GPUs with native bf16, fp16 with a gradient scaler on older GPUs such as "
           "the T4, fp32 on mps and cpu), bf16, fp16 or fp32",
}


def _default_help(name: str, default) -> str:
    if name in _FIELD_HELP:
        return _FIELD_HELP[name]
    if name in DATA_DEFAULTS["shapes"]:
        per_data = ", ".join(f"{data}: {values[name]}" for data, values in DATA_DEFAULTS.items())
        return f"default: per data set ({per_data})"
    return f"default: {default}"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in _HIDDEN:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        base = _base_type(hints[f.name])
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif typing.get_origin(base) is tuple:
            parser.add_argument(flag, type=float, nargs=2, default=default, metavar=("MIN", "MAX"),
                                help=_default_help(f.name, default))
        else:
            parser.add_argument(flag, type=base, default=default, help=_default_help(f.name, default))
    parser.add_argument("--mask", action="append", default=[], metavar="KEY=VALUE",
                        help="override a MaskConfig field, e.g. --mask num_targets=2 --mask strategy=random")


def _parse_mask_overrides(items: list[str]) -> dict:
    """["num_targets=2", "target_scale=[0.1,0.2]", "strategy=random"] -> dict (JSON values, else strings)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--mask expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def _load_test_set(spec: str, explicit: bool, root, image_size: int, max_images: int | None):
    """The held-out split of `spec`; an explicitly given image folder without a test/ subfolder
    is itself the test set."""
    from .data import load_dataset

    try:
        return load_dataset(spec, "test", root=root, image_size=image_size, max_images=max_images)
    except ValueError:
        if explicit and spec.startswith("imagefolder:"):
            return load_dataset(spec, "train", root=root, image_size=image_size, max_images=max_images)
        raise


def torch_distributed_ready() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in _HIDDEN}
    # one length only: an explicit --steps or --epochs replaces the default budget
    if args.steps is not None or args.epochs is not None:
        values["budget_minutes"] = None
    values["mask"] = _parse_mask_overrides(args.mask)
    config = TrainConfig(**values)
    try:
        result = train(config, args.out, resume=not args.no_resume, progress=not args.quiet)
    finally:
        if torch_distributed_ready():          # torchrun: leave the process group cleanly
            import torch.distributed as dist
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:   # torchrun: rank 0 reports for the run
        return 0
    last = result.history[-1] if result.history else {}
    summary = f"trained {result.steps} steps in {result.seconds / 60:.1f} min"
    if last:
        summary += (f"; final loss {last['loss']:.4f}, target std {last['target_std']:.3f}, "
                    f"RankMe {last['target_rankme']:.1f}, ")
        if "target_image_share" in last:        # records from before this monitor lack it
            summary += f"across-image share {last['target_image_share']:.2f}, "
        summary += f"{last['images_per_second']:.0f} img/s"
    print(summary)
    print(f"checkpoint: {result.checkpoint_path}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset
    from .device import describe_device, pick_device
    from .evaluate import format_table, probe_encoders
    from .train import build_encoder, encoder_config_from_checkpoint, jepa_from_checkpoint, load_checkpoint

    checkpoint_path = Path(args.checkpoint)
    checkpoint = load_checkpoint(checkpoint_path)
    saved = checkpoint["train_config"]
    image_size = checkpoint["data"]["image_size"]
    root = args.data_root or saved["data_root"]
    train_spec = args.data or saved["data"]
    test_spec = args.test_data or train_spec
    print(f"probe data: train={train_spec} test={test_spec} ({image_size} px)")
    train_set = load_dataset(train_spec, "train", root=root, image_size=image_size, max_images=args.max_train_images)
    test_set = _load_test_set(test_spec, explicit=args.test_data is not None, root=root, image_size=image_size,
                              max_images=args.max_test_images)
    model = jepa_from_checkpoint(checkpoint)
    if args.layers is None:
        args.layers = min(4, checkpoint["encoder_config"].get("depth", 1))   # a CNN: its final output
    torch.manual_seed(args.seed)
    random_init = build_encoder(encoder_config_from_checkpoint(checkpoint))
    encoders = {"target encoder": model.target_encoder, "context encoder": model.context_encoder,
                "random init": random_init}
    print(f"{len(train_set)} train / {len(test_set)} test images; reading the last {args.layers} block(s)")
    device = pick_device(args.device)
    print(describe_device(device))
    rows = probe_encoders(encoders, train_set, test_set, layers=args.layers, log=print, device=device,
                          progress=not args.quiet)
    title = f"probe after {checkpoint['step']} steps ({checkpoint.get('elapsed_seconds', 0) / 60:.1f} min)"
    print(format_table(rows, title))
    out = (checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent) / "probe.json"
    out.write_text(json.dumps({"train_data": train_spec, "test_data": test_spec, "layers": args.layers,
                               "train_images": len(train_set), "test_images": len(test_set),
                               "step": checkpoint["step"], "rows": [r.as_dict() for r in rows]}, indent=1))
    print(f"written: {out}")
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    from .course import run_course

    run_course(args.out, profile=args.profile, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jepa-lite", description="Pretrain and probe I-JEPA models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="pretrain a JEPA; writes checkpoint.pt, config.json, metrics.json")
    add_train_arguments(p_train)
    p_train.add_argument("--out", required=True, help="output folder (resumes if it holds a checkpoint)")
    p_train.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    p_train.add_argument("--quiet", action="store_true", help="no progress bar")
    p_train.set_defaults(func=cmd_train)

    p_probe = sub.add_parser("probe", help="linear + kNN probes of a checkpoint's encoders and baselines")
    p_probe.add_argument("--checkpoint", required=True, help="checkpoint file or the --out folder of train")
    p_probe.add_argument("--data", default=None, help="training data of the probe (default: the checkpoint's)")
    p_probe.add_argument("--test-data", default=None, help="test data (default: the held-out split of --data)")
    p_probe.add_argument("--data-root", default=None)
    p_probe.add_argument("--layers", type=int, default=None,
                         help="read the average-pooled outputs of the last K blocks, concatenated "
                              "(default: min(4, depth))")
    p_probe.add_argument("--max-train-images", type=int, default=None)
    p_probe.add_argument("--max-test-images", type=int, default=None)
    p_probe.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")
    p_probe.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                         help="where the encoders run (auto: a GPU when there is one)")
    p_probe.add_argument("--quiet", action="store_true", help="no progress bars")
    p_probe.set_defaults(func=cmd_probe)

    p_course = sub.add_parser("course", help="execute every course notebook in order (fresh kernels) into a "
                                             "build folder; print times, peak memory and the final probe table")
    p_course.add_argument("--out", default="build/notebooks", help="folder for the executed copies")
    p_course.add_argument("--profile", default=None, choices=["test", "cpu", "gpu"],
                          help="default: $JEPA_LITE_PROFILE, else gpu on CUDA/MPS and cpu otherwise")
    p_course.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 05")
    p_course.set_defaults(func=cmd_course)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingStopped as stopped:      # the checkpoint is written, and the trainer said how to resume
        return 128 + stopped.signal_number
    except (JepaLiteError, ValueError, FileNotFoundError, FloatingPointError) as error:   # expected: one line
        print(f"jepa-lite {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
