"""The exercises' checks: one function per exercise, `check_NN_M` for exercise M of notebook NN.

The check cell after an exercise's solution opens with a guard (the name the solution binds, or
`get_ipython().last_execution_succeeded`), then calls its function here with the learner's answer
and what the notebook already holds. A function is silent when the answer is right; otherwise it
raises AssertionError with a message for the learner that starts with "Exercise M:". Each one
recomputes the answer, or the property the exercise asks about, instead of testing only that a value
exists or lies in a range, so that plausible wrong answers (an off-by-one, a transposed or
mis-normalised result, a constant of the right shape) fail. tests/test_exercise_checks.py runs every
function on its solution and on wrong answers listed beside it.

Nothing here changes the notebook's state: a check that needs random numbers draws them from its own
generator or inside `torch.random.fork_rng`, and runs without gradients.
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F


def _require(condition, exercise: int, message: str) -> None:
    if not condition:
        raise AssertionError(f"Exercise {exercise}: {message}")


def _close(value, expected, tolerance: float) -> bool:
    """A Python or 0-d tensor number within `tolerance` of `expected` (False for non-numbers, NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError):
        return False
    return math.isfinite(value) and abs(value - float(expected)) <= tolerance


def _tensor(value) -> bool:
    return isinstance(value, torch.Tensor)


def _allclose(a, b, atol: float = 1e-5, rtol: float = 1e-5) -> bool:
    return (_tensor(a) and _tensor(b) and tuple(a.shape) == tuple(b.shape)
            and torch.allclose(a.detach().double().cpu(), b.detach().double().cpu(), atol=atol, rtol=rtol))


# ---------------------------------------------------------------------------------------------
# notebook 00: setup and data


def check_00_1(small, large) -> None:
    from jepa_lite.data.datasets import make_shapes

    ref_small, ref_large = make_shapes(1, start_index=7), make_shapes(1, image_size=64, start_index=7)
    _require(large.image_size == 64 and small.image_size == ref_small.image_size, 1,
             "render `large` at 64 px and `small` at the default size")
    _require(torch.equal(small.images, ref_small.images), 1,
             "`small` should be image 7 of the training split: make_shapes(1, start_index=7)")
    _require(torch.equal(large.images, ref_large.images), 1,
             "`large` should be the same image 7 at 64 px: make_shapes(1, image_size=64, start_index=7)")


def check_00_2(per_class, masks, labels, num_classes: int) -> None:
    _require(_tensor(per_class) and tuple(per_class.shape) == (num_classes,), 2,
             "`per_class` should hold one mean area per class of `balance`, a tensor [classes]")
    expected = torch.stack([masks[labels == c].double().mean() for c in range(num_classes)])
    _require(float(per_class.max()) <= 1, 2, "keep the areas as fractions of the image (0 to 1), not percent")
    _require(_allclose(per_class, expected, atol=1e-4), 2,
             "`per_class[c]` should be the mean fraction of the image that objects of class c cover, "
             "for every class c, in the order of `balance.classes`")


def check_00_3(summary_text, refusal) -> None:
    from jepa_lite.course.profiles import active_profile

    _require(isinstance(summary_text, str), 3, "keep the profile's summary, a string, in `summary_text`")
    _require(summary_text == active_profile("test").summary(), 3,
             "`summary_text` should be the summary of the profile named \"test\": active_profile(\"test\").summary()")
    _require(isinstance(refusal, ValueError) and "unknown profile" in str(refusal), 3,
             "keep the error that active_profile raises for a name that does not exist in `refusal` "
             "(`except ValueError as err: refusal = err`)")


# ---------------------------------------------------------------------------------------------
# notebook 01: patches and masks


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // p) * (W // p), C * p * p)


def check_01_1(t8, embed8, images) -> None:
    B, C, H, W = images.shape
    _require(_tensor(t8) and tuple(t8.shape) == (B, (H // 8) * (W // 8), C * 8 * 8), 1,
             "`t8` should be patchify(images, 8), [B, N, 3 * 8 * 8]")
    _require(torch.equal(t8, _patchify(images, 8)), 1,
             "`t8` should hold the 8 px patches of `images` in row-major order, each flattened as (C, p, p)")
    proj = getattr(embed8, "proj", None)
    _require(proj is not None and tuple(proj.kernel_size) == (8, 8) and tuple(proj.stride) == (8, 8), 1,
             "`embed8` should be a PatchEmbed with 8 px patches")
    _require(proj.in_channels == 3 and proj.out_channels == 32, 1, "`embed8` should be PatchEmbed(8, 3, 32)")


def check_01_2(largest, config) -> None:
    from jepa_lite.core.masks import MaskSampler

    def accepted(hi):
        try:
            MaskSampler(replace(config, target_scale=(0.1, hi)))
            return True
        except ValueError:
            return False

    _require(isinstance(largest, float), 2,
             "keep the largest accepted upper end of target_scale, a float, in `largest`")
    _require(accepted(largest), 2, f"MaskSampler refuses target_scale=(0.1, {largest}): `largest` should be accepted")
    _require(not accepted(round(largest + 0.01, 2)), 2,
             f"MaskSampler also accepts (0.1, {round(largest + 0.01, 2)}): `largest` should be the largest "
             "accepted upper end, in steps of 0.01")


def check_01_3(flat, target_sizes) -> None:
    _require(_tensor(flat) and flat.dim() == 1, 3,
             "keep the torus sampler's target coverage of each of the N cells in `flat`, [N]")
    block_cells = target_sizes.double().prod(dim=-1).mean()            # a block's size is drawn from this table
    _require(_close(flat.double().sum() / block_cells, 1.0, 0.05), 3,
             "`flat[i]` should be the probability that cell i is in one given target block, as section 5(a) "
             "measures it: over all cells it adds up to the cells of one block")
    deviation = float(((flat - flat.mean()).abs().max() / flat.mean()))
    _require(deviation < 0.1, 3, f"`flat` should be flat to within 10% (it deviates {deviation:.0%}): measure the "
                                 "coverage of the torus sampler's target blocks")


# ---------------------------------------------------------------------------------------------
# notebook 02: the encoders


def check_02_1(vit_params, configs: dict, counted: dict) -> None:
    wrong = [name for name, cfg in configs.items() if vit_params(cfg) != counted[name]]
    _require(not wrong, 1, f"vit_params(cfg) should equal the counted parameters for every named size; it does "
                           f"not for {', '.join(wrong)}")


def check_02_2(gram, formula, pe_1d) -> None:
    pe = pe_1d(32, torch.arange(64))
    expected = (pe @ pe.T).double()
    _require(_tensor(gram) and tuple(gram.shape) == (64, 64), 2,
             "`gram` should be pe @ pe.T for positions 0..63, [64, 64]")
    _require(_allclose(gram, expected, atol=1e-4), 2, "`gram` should be pe @ pe.T (plain dot products, not normalised)")
    _require(_allclose(formula, expected, atol=1e-4), 2,
             "`formula`, [64, 64], should be sum_i cos(w_i (s - t)) over the 16 frequencies of pe_1d(32, ...)")


def check_02_3(cnn, x, context_indices, out) -> None:
    gh, gw = cnn.grid_size
    B, D, N = x.shape[0], cnn.embed_dim, gh * gw
    p = x.shape[-2] // gh
    with torch.no_grad():
        tokens = cnn(x)
        _require(tuple(tokens.shape) == (B, N, D), 3, "cnn(x) should return all N tokens, [B, N, D]")
        picked = cnn(x, context_indices)
        _require(tuple(picked.shape) == (B, context_indices.shape[1], D), 3,
                 "cnn(x, indices) should return only the asked tokens, [B, K, D]")
        gathered = torch.gather(tokens, 1, context_indices[..., None].expand(-1, -1, D))
        _require(_allclose(picked, gathered, atol=1e-4), 3,
                 "cnn(x, indices)[b, k] should be token indices[b, k] of cnn(x)[b]")
        changed = x.clone()
        changed[..., :p, (gw - 1) * p:] += 1.0                      # the patch at row 0, last column
        moved = (cnn(changed) - tokens).abs().amax(dim=(0, 2)).view(gh, gw)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    far = ((rows - 0).abs().maximum((cols - (gw - 1)).abs()) >= 2).to(moved.device)
    _require(moved[0, gw - 1] > 0 and not (moved[far] > 1e-5).any(), 3,
             "token n should describe patch n (row-major): changing one patch should change its own token and "
             "leave the tokens of distant patches as they were. Turn [B, D, gh, gw] into [B, N, D] with "
             ".flatten(2).transpose(1, 2), not a reshape")
    _require(out["predictions"].shape == out["targets"].shape and bool(torch.isfinite(out["loss"])), 3,
             "`out = jepa(x, masks.context_indices, masks.target_indices)` should give a finite loss")


# ---------------------------------------------------------------------------------------------
# notebook 03: the predictor


def _predict_without_positions(model, z_c, context_indices, K_tgt):
    u = model.embed(z_c) + model.pos_embed[context_indices]
    seq = torch.cat([u, model.mask_token.expand(z_c.shape[0], K_tgt, -1)], dim=1)
    for block in model.blocks:
        seq = block(seq)
    return model.proj(model.norm(seq[:, u.shape[1]:]))


def check_03_1(identical, out, model, z_c, context_indices, K_tgt: int) -> None:
    with torch.no_grad():
        expected = _predict_without_positions(model, z_c, context_indices, K_tgt)
    _require(_tensor(out) and tuple(out.shape) == tuple(expected.shape), 1,
             f"keep the block's predictions from mask tokens without positions in `out`, {list(expected.shape)}")
    _require(_allclose(out, expected, atol=1e-4), 1,
             "`out` should be what the predictor computes when each mask token is only the learned vector m "
             "(no P_t added), with the context as usual")
    same = torch.allclose(out, out[:, :1].expand_as(out), atol=1e-5)
    _require(isinstance(identical, (bool, torch.Tensor)) and bool(identical) == same, 1,
             "`identical` should say whether all K_tgt predictions of the block in `out` are equal")


def check_03_2(base, both, tokens_only, perm, predictor, z_c, context_indices, target_indices) -> None:
    K = context_indices.shape[1]
    _require(_tensor(perm) and sorted(perm.tolist()) == list(range(K)), 2,
             "`perm` should be a permutation of the K_ctx context positions")
    _require(perm.tolist() != list(range(K)), 2, "`perm` should move the context tokens (not the identity)")
    perm = perm.to(z_c.device)
    with torch.no_grad():
        expected = {"base": predictor(z_c, context_indices, target_indices),
                    "both": predictor(z_c[:, perm], context_indices[:, perm], target_indices),
                    "tokens_only": predictor(z_c[:, perm], context_indices, target_indices)}
    for name, value in (("base", base), ("both", both), ("tokens_only", tokens_only)):
        _require(_allclose(value, expected[name], atol=1e-4), 2,
                 {"base": "`base` should be the predictions of the unpermuted context",
                  "both": "`both` should be the predictions with the tokens and their indices permuted by `perm`",
                  "tokens_only": "`tokens_only` should be the predictions with the tokens permuted by `perm` and "
                                 "the indices left as they are"}[name])


def check_03_3(one_layer, a, s, z_c, context_indices, target_indices) -> None:
    _require(one_layer.config.depth == 1 and not one_layer.config.shared_context, 3,
             "keep the depth-1 predictor, per-block (shared_context=False), in `one_layer`")
    spread = min(float(param.detach().float().std()) for param in one_layer.parameters() if param.numel() > 1)
    _require(spread > 0.1, 3, "scramble `one_layer` (scramble_) as `theirs` was, so that no weight keeps its "
                              "initial value")
    shared = copy.deepcopy(one_layer)
    shared.config = replace(one_layer.config, shared_context=True)
    with torch.no_grad():
        expected_a = one_layer(z_c, context_indices, target_indices)
        expected_s = shared(z_c, context_indices, target_indices)
    _require(_allclose(a, expected_a, atol=1e-4), 3, "keep the per-block predictions of `one_layer` in `a`")
    _require(_allclose(s, expected_s, atol=1e-4), 3,
             "keep the predictions of `one_layer` with shared_context=True in `s`")


def check_03_4(flip, predictor_flops, pred_cfg, D: int, sizes) -> None:
    k_ctx, k_tgt = sizes[0], sizes[1]
    expected = {}
    for T in (1, 2, 4, 8, 16, 32, 64):
        if (k_ctx + T * k_tgt) ** 2 > T * (k_ctx + k_tgt) ** 2:
            expected.setdefault("attention entries", T)
        if (predictor_flops(pred_cfg, D, k_ctx, k_tgt, T, shared=True)
                > predictor_flops(pred_cfg, D, k_ctx, k_tgt, T, shared=False)):
            expected.setdefault("total FLOPs", T)
    _require(isinstance(flip, dict) and set(flip) <= {"attention entries", "total FLOPs"}, 4,
             "collect in the dict `flip` the first T at which the shared pass costs more, under the keys "
             "'attention entries' and 'total FLOPs'")
    for what in ("attention entries", "total FLOPs"):
        _require(flip.get(what) == expected.get(what), 4,
                 f"flip[{what!r}] should be the first T of 1, 2, 4, ..., 64 at which the shared pass costs more "
                 f"than the per-block passes (no entry when it never does), at the 8x8 grid's mean sizes")


# ---------------------------------------------------------------------------------------------
# notebook 04: the loss and the collapse


def check_04_1(copy_history, config, ema_history, joint_history) -> None:
    _require(isinstance(copy_history, list) and len(copy_history) > 0, 1,
             "keep the momentum-0 run's metrics (its result.history) in `copy_history`")
    _require(config.target_mode == "ema" and config.ema_start == config.ema_end == 0.0, 1,
             "train `config` with target_mode='ema', ema_start=0.0, ema_end=0.0")
    _require(len(copy_history) == len(ema_history) and copy_history[-1]["step"] == ema_history[-1]["step"], 1,
             "train with the same budget as section 3 (**demo)")
    _require(all(record.get("momentum") == 0.0 for record in copy_history), 1,
             "`copy_history` should come from the run with momentum 0 at every step")
    _require([r["loss"] for r in copy_history] != [r["loss"] for r in joint_history], 1,
             "`copy_history` should be a new run (stop-gradient, momentum 0), not the joint run of section 3")


def check_04_2(toy) -> None:
    _require(isinstance(toy, dict) and set(toy) == {"layer-normed", "raw"}, 2,
             "keep each toy run's results in `toy['layer-normed']` and `toy['raw']`")
    for name, run in toy.items():
        _require(len(run["loss"]) == 101, 2,
                 f"`toy[{name!r}]['loss']`: the loss at the start and after each of the 100 steps (101 values)")
        _require(len(run["monitors"]) == 2 and all(len(pair) == 2 for pair in run["monitors"]), 2,
                 f"`toy[{name!r}]['monitors']`: (std, RankMe) of the targets at the start and at the end")
    raw, normed = toy["raw"], toy["layer-normed"]
    _require(_close(normed["shrink"], 1.0, 0.05), 2,
             "layer-normed targets keep their size (each has mean 0 and variance 1 over its 8 features): "
             "toy['layer-normed']['shrink'] should be about 1. Normalise each target over its features")
    _require(raw["loss"][-1] < 0.01 * raw["loss"][0] and raw["shrink"] > 100, 2,
             "trained jointly on raw targets, the three maps should drive the loss below 1% of its start by "
             "shrinking the targets (more than 100-fold): no stop-gradient on g")
    _require(normed["loss"][-1] > 0.01 * normed["loss"][0], 2,
             "on layer-normed targets the loss should stay above 1% of its start")


def check_04_3(basis, z) -> None:
    _require(_tensor(basis) and tuple(basis.shape) == (64, 4) and _tensor(z) and tuple(z.shape) == (512, 64), 3,
             "keep the 4 directions in `basis` [64, 4] and the embeddings in `z` [512, 64]")
    values = torch.linalg.svdvals(z.double())
    _require(values[4] < 0.1 * values[3], 3, "`z` should vary in 4 directions, plus a little noise (its 5th "
                                             "singular value small next to its 4th)")
    q = torch.linalg.qr(basis.double()).Q
    outside = z.double() - z.double() @ q @ q.T
    _require(outside.norm() < 0.1 * z.double().norm(), 3, "`z` should live in the span of `basis`")


def check_04_4(shares, encoder_config, images) -> None:
    from torch import nn

    from jepa_lite.core import objective
    from jepa_lite.core.models import VisionTransformer

    _require(isinstance(shares, dict) and len(shares) == 2
             and all(len(pair) == 2 for pair in shares.values()), 4,
             "keep (input tokens, encoder output) across-image shares for each init in `shares`: the default "
             "init first, then std 0.02")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = VisionTransformer(encoder_config).eval()
    images = images.detach().float().cpu()
    expected = []
    with torch.no_grad():
        expected.append((objective.across_image_share(encoder.embed(images)),
                         objective.across_image_share(encoder(images))))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            nn.init.trunc_normal_(encoder.patch_embed.proj.weight, std=0.02)
        expected.append((objective.across_image_share(encoder.embed(images)),
                         objective.across_image_share(encoder(images))))
    for (name, pair), reference in zip(shares.items(), expected):
        _require(all(_close(value, ref, 0.05) for value, ref in zip(pair, reference)), 4,
                 f"shares[{name!r}] should be about ({reference[0]:.2f}, {reference[1]:.2f}): the across-image "
                 "shares (fractions, 0 to 1) of encoder.embed(held_out) and encoder(held_out), the default "
                 "init first, then the patch projection re-initialised with std 0.02")


# ---------------------------------------------------------------------------------------------
# notebook 05: training


def check_05_1(images_seen, epochs, steps: int, batch_size: int, num_images: int) -> None:
    _require(images_seen == steps * batch_size, 1, "`images_seen` should be steps x batch size")
    _require(_close(epochs, images_seen / num_images, 1e-6), 1,
             "`epochs` should be `images_seen` over the number of training images")


def check_05_2(unchanged, lr_step0, defaults, total: int, steps) -> None:
    from jepa_lite.engine.schedules import lr_at

    expected = all(lr_at(s, total, replace(defaults, min_lr=defaults.lr)) == lr_at(s, total, defaults) for s in steps)
    _require(isinstance(unchanged, bool) and unchanged == expected, 2,
             "`unchanged` (True or False) should say whether min_lr = lr leaves the defaults' curve as it is "
             "at every step of `steps`")
    _require(_close(lr_step0, lr_at(0, total, replace(defaults, warmup_steps=0)), 1e-12), 2,
             "`lr_step0` should be the learning rate lr_at gives at step 0 with warmup_steps=0")


def check_05_3(joint, full, resumed, exact) -> None:
    _require(joint.target_mode == "joint", 3, "keep the resume experiment's config with target_mode='joint' in `joint`")
    _require(len(full.history) == 8 and len(resumed.history) == 4, 3,
             "rerun the resume experiment with `joint`: 8 steps in `full`, steps 5-8 after the restart in `resumed`")
    _require(full.model.target_mode == "joint" and resumed.model.target_mode == "joint", 3,
             "train `full` and `resumed` with the config `joint`")
    same = [r["loss"] for r in full.history[4:]] == [r["loss"] for r in resumed.history]
    _require(isinstance(exact, bool) and exact == same, 3,
             "`exact` (True or False) should say whether the resumed run's losses for steps 5-8 equal the "
             "uninterrupted run's")


# ---------------------------------------------------------------------------------------------
# notebook 06: what it learned


def check_06_1(one, tr1, te1, encoder, probe_train, probe_test, layers: int, device=None) -> None:
    from jepa_lite.evaluation.probes import extract_features, linear_probe

    n = min(8, len(probe_test.labels))
    reference = extract_features(encoder, probe_test.images[:n], layers=1, device=device)
    _require(_tensor(tr1) and _tensor(te1) and tr1.shape[0] == len(probe_train.labels)
             and te1.shape[0] == len(probe_test.labels), 1,
             "`tr1` and `te1` should hold one feature row per training and per test image")
    same = _allclose(te1[:n], reference, atol=0.05, rtol=0.05)          # loose: bf16 autocast on a GPU
    _require(tr1.shape[1] == te1.shape[1] == reference.shape[1] and same, 1,
             f"`tr1` and `te1` should be the final output only, extract_features(..., layers=1) (the table "
             f"used layers={layers})")
    expected = 100 * linear_probe(tr1, probe_train.labels, te1, probe_test.labels)["accuracy"]
    _require(_close(one, expected, 0.05), 1,
             f"`one` should be the linear probe's accuracy on `tr1` / `te1`, in percent ({expected:.1f}%)")


def check_06_2(by_k, train_x, test_x, train_labels, test_labels) -> None:
    from jepa_lite.evaluation.probes import knn_probe

    _require(isinstance(by_k, dict) and {1, 50} <= set(by_k), 2,
             "keep the kNN accuracy (percent) for each k in the dict `by_k`, k = 1 and 50 at least")
    for k, accuracy in by_k.items():
        expected = 100 * knn_probe(train_x, train_labels, test_x, test_labels, k=k)["accuracy"]
        _require(_close(accuracy, expected, 0.05), 2,
                 f"by_k[{k}] should be the kNN accuracy with k={k} on the target encoder's features, in "
                 f"percent ({expected:.1f}%)")


def check_06_3(random_neighbours, train_x, test_x, queries, k: int = 6) -> None:
    sims = F.normalize(test_x[queries].float(), dim=1) @ F.normalize(train_x.float(), dim=1).T
    expected = sims.topk(k, dim=1).indices
    _require(_tensor(random_neighbours) and tuple(random_neighbours.shape) == tuple(expected.shape), 3,
             f"keep what show_neighbours returns for the random-init features in `random_neighbours`, "
             f"{list(expected.shape)}")
    _require(torch.equal(random_neighbours.cpu(), expected.cpu()), 3,
             "`random_neighbours` should be the nearest training images of `queries` in the random-init "
             "network's features (features['random init'])")


# ---------------------------------------------------------------------------------------------
# notebook 07: dense tasks


def check_07_1(two_way, test_targets) -> None:
    from jepa_lite.evaluation.dense import segmentation_iou

    _require(isinstance(two_way, dict) and set(two_way) == {"target encoder", "random init"}, 1,
             "keep the 2-way probe of each encoder in `two_way['target encoder']` and `two_way['random init']`")
    objects = (test_targets > 0).long()
    for name, scores in two_way.items():
        _require(len(scores["per_class_iou"]) == 2, 1,
                 f"two_way[{name!r}] should come from a probe with 2 classes, segmentation_probe(..., num_classes=2)")
        predictions = scores["predictions"].cpu()
        _require(tuple(predictions.shape) == tuple(objects.shape), 1,
                 f"two_way[{name!r}] should score the test patches")
        expected = segmentation_iou(predictions, objects.cpu(), 2)["fg_iou"]
        _require(_close(scores["fg_iou"], expected, 1e-6), 1,
                 f"two_way[{name!r}] should be scored against background vs object, (test_targets > 0)")


def check_07_2(stretched, ceiling, test_targets, test_pixels, patch: int, num_classes: int) -> None:
    from jepa_lite.evaluation.dense import segmentation_iou

    _require(_tensor(stretched) and stretched.shape == test_pixels.shape, 2,
             "keep the patch labels stretched to pixels in `stretched`, [M, H, W]")
    expected = test_targets.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
    _require(torch.equal(stretched.cpu(), expected.cpu()), 2,
             "each patch label should fill its own p x p pixels (repeat_interleave along both axes)")
    scores = segmentation_iou(expected, test_pixels, num_classes)
    _require(isinstance(ceiling, dict) and _close(ceiling.get("miou"), scores["miou"], 1e-6)
             and _close(ceiling.get("fg_iou"), scores["fg_iou"], 1e-6), 2,
             "keep the scores of `stretched` against the pixel labels, segmentation_iou(stretched, test_pixels, "
             "NUM_CLASSES), in `ceiling`")


def check_07_3(axes, images, attention: dict, show: int) -> None:
    _require(getattr(axes, "shape", None) == (2, show), 3,
             "draw `fig, axes` with 2 rows (target encoder, random init) of `show` images")
    for row, (name, maps) in enumerate(attention.items()):
        for i in range(show):
            drawn = axes[row, i].images
            _require(len(drawn) == 2, 3, "draw each image, then its objectness map over it (two imshow calls)")
            shown = torch.as_tensor(np.asarray(drawn[0].get_array()))
            _require(torch.equal(shown, images[i].permute(1, 2, 0).cpu()), 3,
                     f"column {i} should show test image {i}")
            _require(_allclose(torch.as_tensor(np.asarray(drawn[1].get_array())), maps[i]), 3,
                     f"row {row + 1} should hold the objectness maps of the {name} (det[{name!r}]['attention']), "
                     f"map i over image i")


def check_07_4(centred, pca_features) -> None:
    from jepa_lite.evaluation.dense import pca_rgb

    _require(isinstance(centred, dict) and set(centred) == set(pca_features), 4,
             "keep the centred PCA picture of each encoder of `pca_features` in `centred`")
    for name, f in pca_features.items():
        expected = pca_rgb(f - f.mean(dim=(1, 2), keepdim=True))
        _require(_allclose(centred[name], expected, atol=1e-4), 4,
                 f"centred[{name!r}] should be pca_rgb of the features with each image's mean patch feature "
                 f"subtracted (the mean over that image's patches, dims 1 and 2)")


# ---------------------------------------------------------------------------------------------
# notebook 08: prediction vs reconstruction


def check_08_1(decoded_mse, pixel_mse, fit_x, fit_y, eval_x, eval_y, pixel_model, eval_images, grid,
               device=None) -> None:
    from jepa_lite.core.masks import MaskSampler, default_mask_config

    _require(fit_x.shape[0] == fit_y.shape[0] and eval_x.shape[0] == eval_y.shape[0], 1,
             "`fit_x` / `fit_y` and `eval_x` / `eval_y`: one row per target patch")
    _require(not (fit_x.shape == eval_x.shape and torch.equal(fit_x, eval_x)), 1,
             "fit the linear map on one batch (`fit_x`, `fit_y`) and measure it on another (`eval_x`, `eval_y`)")
    _require(_close((eval_y.double() ** 2).mean(), 1.0, 0.05), 1,
             "`eval_y` should be the normalised target patches (predicting 0 scores about 1 on them)")
    def readout_mse(dtype):                      # in float32 as the solution computes it, or in float64
        ones = lambda x: torch.cat([x.cpu().to(dtype), torch.ones(len(x), 1, dtype=dtype)], dim=1)  # noqa: E731
        weights = torch.linalg.lstsq(ones(fit_x), fit_y.cpu().to(dtype)).solution
        return ((ones(eval_x) @ weights - eval_y.cpu().to(dtype)) ** 2).mean().item()

    expected = [readout_mse(torch.float32), readout_mse(torch.float64)]
    _require(any(_close(decoded_mse, e, 0.002 * e) for e in expected), 1,
             f"`decoded_mse` should be the mean squared error, on `eval_x` / `eval_y`, of the least-squares map "
             f"(with a bias) fitted on `fit_x` / `fit_y` ({expected[0]:.3f})")
    was_training = pixel_model.training
    pixel_model.eval()
    with torch.no_grad():
        m = MaskSampler(default_mask_config(grid))(eval_images.shape[0], generator=torch.Generator().manual_seed(1))
        reference = pixel_model(eval_images.to(device), m.context_indices.to(device),
                                m.target_indices.to(device))["pixel_loss"].item()
    pixel_model.train(was_training)
    _require(_close(pixel_mse, reference, 0.1 * reference), 1,
             f"`pixel_mse` should be the pixel model's own loss (its 'pixel_loss') on the same held-out images "
             f"(about {reference:.3f})")


def check_08_2(equal_weight, history) -> None:
    last = history[-1]
    expected = last["embedding_loss"] / last["pixel_loss"]
    _require(_close(equal_weight, expected, 1e-6 * max(1.0, abs(expected))), 2,
             "`equal_weight` should be the pixel_weight that makes the two parts equal at the end: the last "
             "logged embedding loss over the last logged pixel loss")


def check_08_3(timed, ctx, batch, grid, fraction) -> None:
    import time

    calls = []
    seconds = timed(lambda: (calls.append(1), time.sleep(0.02)))
    _require(len(calls) >= 2, 3, "`timed(fn)` should call fn several times and average")
    _require(_close(seconds, 0.02, 0.015), 3,
             "`timed(fn)` should return the mean seconds of one call of fn (not the total, not milliseconds)")
    N = grid[0] * grid[1]
    _require(_tensor(ctx) and ctx.dim() == 2 and ctx.shape[0] == batch.shape[0] and 0 < ctx.shape[1] < N, 3,
             "keep the batch's context indices, [B, K_ctx], in `ctx`")
    _require(_close(fraction, ctx.shape[1] / N, 1e-9), 3,
             "`fraction` should be the share of the image's tokens that the ViT's context pass encodes, K_ctx / N")


# ---------------------------------------------------------------------------------------------
# notebook 09: learned jointly, SIGReg


GAUSSIAN, STRETCHED = "isotropic Gaussian", "stretched (x 3 on one axis)"


def _sigreg_draws(sample: torch.Tensor, num_directions: int, seeds) -> torch.Tensor:
    """SIGReg of `sample` with fresh directions per seed, as sigreg(sample, num_directions,
    generator=torch.Generator().manual_seed(seed)) computes it: [len(seeds)]. One draw at a time:
    all of them in one pass would hold [N, seeds x directions, knots] cosines (over 1 GiB)."""
    from jepa_lite.core.sigreg import epps_pulley, random_directions

    z = sample.detach().float().cpu()
    return torch.stack([epps_pulley(z @ random_directions(z.shape[-1], num_directions,
                                                          torch.Generator().manual_seed(s))).mean()
                        for s in seeds])


def check_09_1(spread, samples) -> None:
    _require(isinstance(spread, dict) and all((m, name) in spread for m in (4, 16, 64, 256)
                                              for name in (GAUSSIAN, STRETCHED)), 1,
             "keep (mean, std, min, max) over the 20 draws in `spread[M, sample name]`, for M = 4, 16, 64, 256")
    for m in (4, 256):
        for name in (GAUSSIAN, STRETCHED):
            draws = _sigreg_draws(samples[name], m, range(20))
            mean, std = draws.mean().item(), draws.std().item()
            value = spread[m, name]
            _require(len(value) == 4 and value[2] <= value[0] <= value[3], 1,
                     f"spread[{m}, {name!r}] should be (mean, std, min, max) of the 20 draws")
            _require(_close(value[0], mean, 4 * std / math.sqrt(20) + 1e-4) and _close(value[1], std, 0.5 * std), 1,
                     f"spread[{m}, {name!r}] should be about ({mean:.2f}, {std:.2f}, ...): SIGReg of that sample "
                     f"with {m} directions, drawn afresh 20 times")


def check_09_2(by_n) -> None:
    _require(isinstance(by_n, dict) and {256, 1_024, 4_096} <= set(by_n)
             and all(len(by_n[n]) == 2 for n in (256, 1_024, 4_096)), 2,
             "keep [isotropic, stretched] SIGReg for N = 256, 1,024 and 4,096 in the dict `by_n`")
    _require(all(gaussian < 3 for gaussian, _ in by_n.values()), 2,
             "the isotropic Gaussian's SIGReg should stay small (below 3) at every N: by_n[N][0]")
    _require(by_n[256][1] < by_n[1_024][1] < by_n[4_096][1] and by_n[4_096][1] > 8 * by_n[256][1], 2,
             "the stretched sample's SIGReg, by_n[N][1], should grow with N (about in proportion): compute it on "
             "the first N rows")


def check_09_3(tilted) -> None:
    _require(_tensor(tilted) and tuple(tilted.shape) == (2_048, 2), 3,
             "keep the rotated 2-D sample [2048, 2] in `tilted`")
    diagonal = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    across = torch.tensor([1.0, -1.0]) / math.sqrt(2)
    tilted = tilted.detach().float().cpu()
    _require(abs((tilted @ diagonal).std().item() - 3) < 0.3 and abs((tilted @ across).std().item() - 1 / 3) < 0.05, 3,
             "rotate the sample with standard deviations (3, 1/3) by 45 degrees: std 3 along (1, 1)/sqrt(2), "
             "1/3 along (1, -1)/sqrt(2)")


# ---------------------------------------------------------------------------------------------
# notebook 10: what the predictor imagines


def check_10_1(grey_mse, true_patches) -> None:
    _require(_tensor(true_patches) and true_patches.dim() == 3, 1,
             "keep the true target patches [B, K, P] (normalised pixels) in `true_patches`")
    expected = true_patches.detach().double().pow(2).mean().item()
    _require(_close(grey_mse, expected, 1e-4 * max(1.0, expected)), 1,
             f"grey is 0 in normalised pixels: the mean squared error of 0 against the true patches, "
             f"mean(true_patches ** 2), should be {expected:.4f}")


def check_10_2(object_iou) -> None:
    g = torch.Generator().manual_seed(10)
    for shape in [(6, 32, 32), (3, 16, 8)]:
        a, b = torch.rand(shape, generator=g) < 0.3, torch.rand(shape, generator=g) < 0.5
        a[0], b[0] = False, False                                     # an image with no object in either: IoU 1
        a[1] = b[1]                                                   # identical masks: IoU 1
        inter, union = (a & b).flatten(1).sum(1).double(), (a | b).flatten(1).sum(1).double()
        expected = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        try:
            got = object_iou(a.clone(), b.clone())
        except Exception as error:                  # noqa: BLE001 - the learner's function, any failure
            raise AssertionError(f"Exercise 2: object_iou(predicted, true) failed: {error}") from None
        _require(_tensor(got) and tuple(got.shape) == shape[:1], 2,
                 f"return one IoU per image: a tensor of shape {shape[:1]} for masks {shape}")
        _require(torch.allclose(got.double().cpu(), expected, atol=1e-6), 2,
                 "IoU per image = |predicted AND true| / |predicted OR true| over the image's pixels, "
                 "and 1 where both masks are empty")


# ---------------------------------------------------------------------------------------------
# notebook 11

def check_11_1(reverse_clips) -> None:
    from jepa_lite.data.moving_shapes import make_moving_shapes

    sample = make_moving_shapes(12, seed=0, start_index=2_000_000)
    try:
        clips, labels = reverse_clips(sample.clips.clone(), sample.motion_labels.clone())
    except Exception as error:                  # noqa: BLE001 - the learner's function, any failure
        raise AssertionError(f"Exercise 1: reverse_clips(clips, motion_labels) failed: {error}") from None
    expected = sample.reversed()
    _require(_tensor(clips) and tuple(clips.shape) == tuple(sample.clips.shape) and clips.dtype == torch.uint8, 1,
             f"return the clips as uint8 [N, T, 3, H, W] {tuple(sample.clips.shape)}, then the labels")
    _require(torch.equal(clips, expected.clips), 1,
             "play each clip backwards: reverse the order of its frames (dim 1), nothing else")
    _require(_tensor(labels) and torch.equal(labels.long().cpu(), expected.motion_labels), 1,
             "give each clip the label of the reverse motion: right <-> left, down <-> up, grow <-> shrink")


def check_11_2(tokens_per_clip, attention_ratio) -> None:
    for frames, size, tubelet, patch in [(8, 32, 2, 8), (8, 32, 1, 4), (16, 64, 4, 16), (6, 48, 3, 8)]:
        expected = (frames // tubelet) * (size // patch) ** 2
        _require(_close(tokens_per_clip(frames, size, tubelet, patch), expected, 0), 2,
                 f"tokens_per_clip({frames}, {size}, {tubelet}, {patch}) should be {expected}: "
                 f"(frames / tubelet) time steps of (image_size / patch)^2 cells")
    _require(_close(attention_ratio, (512 / 64) ** 2, 1e-6), 2,
             "attention_ratio: the number of attention pairs (tokens squared) of tubelets 1x4x4 over that of 2x8x8")
