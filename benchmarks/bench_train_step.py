"""Training-step throughput: jepa_lite vs the reference code's step, side by side.

    python benchmarks/bench_train_step.py [--steps 20] [--batch-size 128] [--model small]
    python benchmarks/bench_train_step.py --reference PATH/TO/ijepa     # also the real reference code

--reference takes a checkout of facebookresearch/ijepa that you fetched (this project ships none of
its code): its VisionTransformer and VisionTransformerPredictor then run the same step as its
src/train.py (layer-normed targets, smooth-L1, one predictor pass per target block, EMA), on the
same images and masks. Without it, benchmarks/reference_style.py stands in for that code.

Both run the same sizes (default: ViT 128 x 4, predictor 64 x 3, B=128, 32 px, patch 4,
4 target blocks) on the same pre-sampled masks, alternating rounds so that machine noise hits
both alike. Prints img/s, the achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode for
one forward+backward) and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_style import ReferenceStyleStep

from jepa_lite.core.masks import MaskConfig, MaskSampler
from jepa_lite.core.model_sizes import model_configs
from jepa_lite.engine.build import build_jepa, param_groups
from jepa_lite.engine.device import autocast_context


def paper_masks(batch_size: int, rounds: int):
    """The paper's multi-block setting on the 8x8 grid, pre-sampled so both sides see the same."""
    sampler = MaskSampler(MaskConfig(grid_size=(8, 8), num_targets=4, target_scale=(0.15, 0.2),
                                     target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0), min_keep=4))
    g = torch.Generator().manual_seed(0)
    return [sampler(batch_size, generator=g) for _ in range(rounds)]


def real_reference_step(path: str, dim=128, depth=4, heads=4, pred_dim=64, pred_depth=3, img=32, patch=4):
    """The reference code's own modules (a checkout at `path`), stepped as its src/train.py does."""
    sys.path.insert(0, str(Path(path).resolve()))
    from src.masks.utils import apply_masks
    from src.models.vision_transformer import VisionTransformer, VisionTransformerPredictor
    torch.manual_seed(0)
    encoder = VisionTransformer(img_size=[img], patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
    predictor = VisionTransformerPredictor(num_patches=(img // patch) ** 2, embed_dim=dim,
                                           predictor_embed_dim=pred_dim, depth=pred_depth, num_heads=heads)
    return ReferenceStyleStep(encoder=encoder, predictor=predictor, masks_of=apply_masks)


class LiteStep:
    def __init__(self, model_name: str, amp: str, shared_context: bool = False):
        torch.manual_seed(0)
        enc, pred = model_configs(model_name)
        pred.shared_context = shared_context
        self.model = build_jepa(enc, pred)
        self.optimizer = torch.optim.AdamW(param_groups(self.model), lr=1e-3)
        self.amp = amp

    def step(self, images, context_indices, target_indices, momentum=0.996):
        with autocast_context(torch.device("cpu"), self.amp):
            loss = self.model(images, context_indices, target_indices)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.model.update_target(momentum)
        return float(loss.detach())


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """What this CPU's fp32 matmul reaches on large square matrices: the ceiling for any step."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def count_flops(stepper, images, masks) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        stepper.step(images, masks.context_indices, masks.target_indices)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="small")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reference", default=None, metavar="PATH",
                        help="a checkout of facebookresearch/ijepa: also time its own modules")
    parser.add_argument("--bf16", action="store_true", help="also time CPU bf16 autocast (slow without AVX512-BF16)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    enc, pred = model_configs(args.model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; encoder {enc.embed_dim}x{enc.depth}, "
          f"predictor {pred.embed_dim}x{pred.depth}, B={args.batch_size}, 32 px, patch 4, 4 targets")

    B = args.batch_size
    images = torch.randn(B, 3, 32, 32)
    masks = paper_masks(B, args.steps)
    torch.set_grad_enabled(True)
    print(f"context tokens {masks[0].context_indices.shape[1]}, target block {masks[0].target_indices.shape[2]} tokens")
    contenders = {}
    if args.reference:
        contenders["reference code fp32"] = real_reference_step(args.reference, enc.embed_dim, enc.depth, enc.num_heads,
                                                             pred.embed_dim, pred.depth)
    contenders.update({
        "reference-style fp32": ReferenceStyleStep(enc.embed_dim, enc.depth, enc.num_heads, pred.embed_dim, pred.depth),
        "jepa_lite fp32": LiteStep(args.model, "none"),
        "jepa_lite shared-context": LiteStep(args.model, "none", shared_context=True),
    })
    if args.bf16:
        contenders["jepa_lite bf16 autocast"] = LiteStep(args.model, "bf16")
    flops = {name: count_flops(s, images, masks[0]) for name, s in contenders.items()}
    for s in contenders.values():          # warm-up
        for m in masks[:3]:
            s.step(images, m.context_indices, m.target_indices)
    seconds = {name: 0.0 for name in contenders}
    counts = {name: 0 for name in contenders}
    for _ in range(args.rounds):
        for name, s in contenders.items():
            start = time.perf_counter()
            for m in masks:
                s.step(images, m.context_indices, m.target_indices)
            seconds[name] += time.perf_counter() - start
            counts[name] += len(masks)
    base = None
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak of this CPU (2048 x 2048): {peak:.0f} GFLOP/s")
    print(f"{'contender':<26}{'img/s':>8}{'ms/step':>9}{'GFLOP/step':>12}{'GFLOP/s':>9}{'of peak':>9}{'ratio':>7}")
    for name in contenders:
        per_step = seconds[name] / counts[name]
        ips = B / per_step
        base = base or ips
        print(f"{name:<26}{ips:>8.0f}{1000 * per_step:>9.1f}{flops[name] / 1e9:>12.2f}"
              f"{flops[name] / 1e9 / per_step:>9.1f}{flops[name] / 1e9 / per_step / peak:>9.0%}{ips / base:>7.2f}")


if __name__ == "__main__":
    main()
