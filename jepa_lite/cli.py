"""`jepa-lite`: pretrain and probe from the command line.

    jepa-lite train [--data shapes|shapes-mono|moving-shapes|moving-shapes-mono|cifar10|stl10|imagefolder:PATH]
                    [--model tiny|small|...|video-tiny (with moving-shapes[-mono])]
                    [--budget-minutes N | --epochs N | --steps N] --out DIR
    jepa-lite probe --checkpoint DIR_OR_FILE [--data D] [--test-data D2] [--layers K]
    jepa-lite student [--out build/student] [--only 00 05]

Every `train` flag is a field of `jepa_lite.engine.config.TrainConfig` (same name, dashes for
underscores), so the defaults live in one place.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from jepa_lite.core.model_sizes import IJEPA_SIZES, MODEL_SIZES, VIDEO_SIZES
from jepa_lite.core.objective import LOSSES, OBJECTIVES, SIGREG_ON, TARGET_MODES, TARGET_NORMS
from jepa_lite.data.augment import COLOUR_VIEWS
from jepa_lite.engine.config import DATA_DEFAULTS, ENCODER_NAMES, LR_SCHEDULES, RECIPES, TrainConfig
from jepa_lite.engine.device import PRECISIONS
from jepa_lite.errors import JepaLiteError, TrainingStopped

_HIDDEN = {"mask"}     # set through --mask key=value


def _base_type(hint) -> type:
    """The type a flag parses to: `int | None` -> int, `float` -> float."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)][0]
    return hint


_FIELD_HELP = {
    "recipe": "named defaults (jepa_lite.engine.config.RECIPES): fast = the course's short-run recipe, paper = the "
              "I-JEPA reference code's settings except PAPER_DEVIATIONS (its mask sampler's fixes, image folders' "
              "crops); flags given here override it",
    "data": "shapes (procedural, offline), shapes-mono (the same in one grey palette), cifar10, stl10 or "
            "imagefolder:PATH",
    "data_root": "where downloaded data sets are kept",
    "max_train_images": "use only the first N training images",
    "model": "named size: micro, tiny, small, vit_s_96, vit_b_224, or a released I-JEPA size",
    "encoder": "the architecture of the encoders",
    "image_size": "resize the images to this size (default: the data set's own)",
    "patch_size": "patch size in pixels (default: the model size's own)",
    "drop_path": "stochastic depth rate of the last encoder block (0 = off)",
    "shared_context": "predictor: one pass for all target blocks (default: the recipe's; paper: one per block)",
    "steps": "train this many steps",
    "epochs": "train this many passes over the data",
    "budget_minutes": "train for this many minutes (the default when no length is given: 5)",
    "batch_size": "images per step, over all processes",
    "lr": "peak learning rate",
    "start_lr": "learning rate at the start of the warm-up",
    "min_lr": "learning rate at the end of the cosine schedule",
    "lr_schedule": "after the warm-up: stay at lr, or decay on a cosine to min_lr",
    "warmup_steps": "warm-up steps (at most a tenth of the run); given alone, it replaces the recipe's "
                    "--warmup-fraction",
    "warmup_fraction": "warm-up as a fraction of the run; given alone, it replaces the recipe's --warmup-steps",
    "weight_decay": "AdamW weight decay at the start (matrices only)",
    "final_weight_decay": "weight decay at the end (cosine from --weight-decay)",
    "betas": "AdamW betas",
    "grad_clip": "maximum gradient norm (0 = no clipping)",
    "ema_start": "EMA momentum of the target encoder at the start (linear to --ema-end)",
    "ema_end": "EMA momentum at the end",
    "loss": "distance between predicted and target embeddings",
    "target_norm": "normalisation of the targets: instance (over each image's tokens, then layer norm), "
                   "layer (the paper's) or none",
    "target_mode": "ema: the target encoder is an average of the context encoder (the paper); joint: trained "
                   "by gradient (collapses, notebook 04); sigreg: one encoder for both, trained by gradient, "
                   "with the SIGReg regulariser (LeJEPA, notebook 09)",
    "sigreg_weight": "target mode sigreg: loss = (1 - w) * prediction loss + w * SIGReg",
    "sigreg_on": "target mode sigreg: the embeddings SIGReg sees: each image's mean token (pooled) or one "
                 "random token per image (tokens)",
    "objective": "jepa (predict embeddings), pixels (a masked autoencoder on the same masks) or both",
    "pixel_weight": "objective both: weight of the pixel loss",
    "floor_mask_tokens": "mask block sizes floored to whole tokens, as the reference's sampler does",
    "reference_masks": "the reference's mask setting on every grid (4 targets of 15-20%%, blocks of more than 10 "
                       "cells), else the course's, chosen by grid",
    "reference_network": "the reference's LayerNorm eps (1e-6), patch-embedding init (std 0.02) and ImageNet input "
                         "normalisation, else the course's",
    "crop_scale": "random-resized-crop area range (default: the recipe's, else per data set)",
    "hflip": "random horizontal flips",
    "colour_views": "same: both encoders see the same colours (the paper); target / both: scrambled colours "
                    "for the target encoder / for each (docs/results.md)",
    "stream": "decode an image folder on the fly with DataLoader workers instead of holding it in memory "
              "(default: when the decoded folder would exceed 2 GiB)",
    "loader_workers": "streaming: decoding processes (default: half the usable CPUs, 1 to 8)",
    "seed": "seed of every random draw of the run (weights, batches, crops, masks)",
    "device": "auto (a GPU when there is one), cpu, cuda, cuda:N or mps",
    "amp": "precision: auto (bf16 on GPUs with native bf16, fp16 with a gradient scaler on older GPUs such as "
           "the T4, fp32 on mps and cpu), bf16, fp16 or fp32",
    "compile": "torch.compile the model",
    "log_every": "write a metrics record every N steps",
    "checkpoint_every_minutes": "write a checkpoint this often (and at the end)",
}

_CHOICES = {
    "recipe": tuple(RECIPES), "encoder": ENCODER_NAMES, "lr_schedule": LR_SCHEDULES, "loss": LOSSES,
    "target_norm": TARGET_NORMS, "target_mode": TARGET_MODES, "sigreg_on": SIGREG_ON,
    "objective": OBJECTIVES,
    "colour_views": COLOUR_VIEWS, "amp": PRECISIONS,
    "model": tuple(MODEL_SIZES) + tuple(VIDEO_SIZES) + tuple(IJEPA_SIZES),
}


def _help(name: str, default) -> str:
    text = _FIELD_HELP[name]
    if default is None:
        if name in RECIPES["fast"]:
            per_recipe = ", ".join(f"{recipe}: {values[name] if values[name] is not None else 'per data set'}"
                                   for recipe, values in RECIPES.items())
            return f"{text} (default: {per_recipe})"
        if name in DATA_DEFAULTS["shapes"]:
            per_data = ", ".join(f"{data}: {values[name]}" for data, values in DATA_DEFAULTS.items())
            return f"{text} (default: per data set, {per_data})"
        return text
    return f"{text} (default: {default})"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field. Every flag defaults to None ("not given"): the run's values are
    TrainConfig's defaults (or --config's file) with the given flags on top."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in _HIDDEN:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        base = _base_type(hints[f.name])
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=_help(f.name, default))
        elif typing.get_origin(base) is tuple:
            parser.add_argument(flag, type=float, nargs=2, default=None, metavar=("A", "B"),
                                help=_help(f.name, default))
        else:
            parser.add_argument(flag, type=base, default=None, choices=_CHOICES.get(f.name),
                                help=_help(f.name, default))
    parser.add_argument("--mask", action="append", default=[], metavar="KEY=VALUE",
                        help="override a MaskConfig field, e.g. --mask num_targets=2 --mask strategy=random")
    parser.add_argument("--config", default=None, metavar="RUN/config.json",
                        help="start from an earlier run's settings (its config.json or its folder); "
                             "flags given here override them, and a new --recipe, --data, --model or length "
                             "brings its own values for what the run took from the old one")


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
    from jepa_lite.data.datasets import load_dataset

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
    from jepa_lite.engine.train import train

    base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if f.name not in _HIDDEN and getattr(args, f.name) is not None}
    if args.mask:
        given["mask"] = {**dict(base.mask), **_parse_mask_overrides(args.mask)}
    config = base.changed(**given)          # a new recipe, data set, size or length brings its own values
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

    from jepa_lite.data.datasets import load_dataset
    from jepa_lite.engine.build import build_encoder
    from jepa_lite.engine.checkpoint import encoder_config_from_checkpoint, jepa_from_checkpoint, load_checkpoint
    from jepa_lite.engine.device import describe_device, pick_device
    from jepa_lite.evaluation.probes import format_table, probe_encoders

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
    from jepa_lite.course.profiles import active_profile, repo_root
    from jepa_lite.course.runner import record_minutes, run_course, store_outputs

    results = run_course(args.out, profile=args.profile, only=args.only)
    if args.store:
        for result in results:
            source = repo_root() / "notebooks" / result["notebook"]
            store_outputs(Path(args.out) / result["notebook"], source)
            print(f"stored the outputs in {source}")
        profile = active_profile(args.profile).name
        if profile != "test":                # the times notebook 00 prints for this profile
            record_minutes(profile, results)
            print(f"recorded the minutes of {len(results)} notebook(s) for the {profile!r} profile")
    return 0


def cmd_student(args: argparse.Namespace) -> int:
    from jepa_lite.course.student import summary, write_student_notebooks

    print(summary(write_student_notebooks(args.notebooks, args.out, only=args.only)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jepa_lite import __version__

    parser = argparse.ArgumentParser(prog="jepa-lite", description="Pretrain and probe I-JEPA models.")
    parser.add_argument("--version", action="version", version=f"jepa-lite {__version__}")
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
    p_course.add_argument("--store", action="store_true",
                          help="then copy the outputs into the course's notebooks/ (how the committed outputs are "
                               "made)")
    p_course.set_defaults(func=cmd_course)

    p_student = sub.add_parser("student", help="write the student notebooks: each exercise's solution replaced by "
                                               "a stub, followed by its check (jepa_lite.course.student)")
    p_student.add_argument("--out", default="build/student", help="folder for the student notebooks")
    p_student.add_argument("--notebooks", default=None, help="folder of the teacher notebooks (default: the course's)")
    p_student.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 05")
    p_student.set_defaults(func=cmd_student)
    return parser


class _PrintHandler(logging.Handler):
    """The package's messages as plain lines on the current stdout (the command line's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def show_messages() -> None:
    """Print what the "jepa_lite" logger says (a run's messages and warnings), once per process."""
    logger = logging.getLogger("jepa_lite")
    if not any(isinstance(handler, _PrintHandler) for handler in logger.handlers):
        logger.addHandler(_PrintHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_messages()
    try:
        return args.func(args)
    except TrainingStopped as stopped:      # the checkpoint is written, and the trainer said how to resume
        return 128 + stopped.signal_number
    # the errors the package expects (a bad value, a missing file, a NaN loss) are one line; anything
    # else is a bug and keeps its traceback
    except (JepaLiteError, FileNotFoundError) as error:
        print(f"jepa-lite {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
