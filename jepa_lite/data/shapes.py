"""The procedural "shapes" images: counter-based random parameters and vectorised rendering.

Image i is a pure function of (seed, i, image_size); datasets.make_shapes renders any range of indices
and wraps them in an ImageDataset."""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from jepa_lite.errors import BadValue

SHAPE_CLASSES = ["disk", "ring", "square", "frame", "triangle", "plus", "star", "half-disk", "bar", "ell"]

# "colour": every image draws its own background, shape and clutter colours (independent of the class).
# "mono": the same images (same class, pose, clutter, lighting ramp and noise) in one palette: a dark
# shape on a light background with mid-grey clutter, only the grey levels jittered a little.
PALETTES = ("colour", "mono")

# splitmix64 constants, as signed int64 (torch has no uint64 arithmetic; int64 multiply wraps the same way)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic, so mask off the sign extension)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """splitmix64's finaliser: a bijective, well-mixing hash of int64 -> int64."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def _uniforms(seed: int, index: Tensor, num: int) -> Tensor:
    """Counter-based random numbers: [n] int64 image indices -> [n, num] float64 uniform in [0, 1).

    Column p of row i depends only on (seed, index[i], p), never on the batch it is drawn in:
    it is output p of the splitmix64 stream whose state starts at hash(seed, index[i])."""
    key = _mix64(_mix64(torch.tensor(seed, dtype=torch.int64)) + index * _GOLDEN)        # [n]
    steps = torch.arange(1, num + 1, dtype=torch.int64) * _GOLDEN                            # [num]
    bits = _mix64(key[:, None] + steps[None, :])                                              # [n, num]
    return _shr(bits, 11).double() * 2.0 ** -53          # top 53 bits: exactly representable


# Parameter slots of one image in the counter-based stream (adding one never shifts the others).
_P_LABEL, _P_SIZE, _P_CX, _P_CY, _P_ANGLE, _P_NOISE, _P_NUM_DISTRACTORS = range(7)
_P_BG, _P_BG_DELTA, _P_FG = 8, 11, 14                  # 3 channels each
_P_GRAD_ANGLE = 17
_P_DISTRACTORS, _D_STRIDE = 20, 8                       # per distractor: cx, cy, angle, length, radius, rgb
_MAX_DISTRACTORS = 4
_NUM_PARAMS = _P_DISTRACTORS + _D_STRIDE * _MAX_DISTRACTORS

_NOISE_BANK_SIZE = 64
_SIZE_RANGE = (0.28, 0.42)       # shape size r (~ its radius) as a fraction of the image size: objects fill
                                 # much of the image, so most target blocks cut into one (JEPA learned
                                 # more with these than with 0.18-0.34, see docs/results.md)

# star: a pentagram is the set of points inside at least 4 of the 5 lines through its tips
# (the inner pentagon is inside all 5; each tip is outside exactly 1); this avoids a per-pixel atan2.
_STAR_NORMALS = [(math.cos(math.pi / 2 + 2 * math.pi * k / 5), math.sin(math.pi / 2 + 2 * math.pi * k / 5))
                 for k in range(5)]
_STAR_RADIUS = 1.15
_STAR_APOTHEM = _STAR_RADIUS * math.cos(2 * math.pi / 5)
_SQRT3 = math.sqrt(3.0)


def _shape_inside(label: int, u: Tensor, v: Tensor) -> Tensor:
    """Is the point inside shape `label`? u, v: [n, H, W] float coordinates in the shape's own frame,
    in units of its size r (every shape fits in a disk of radius ~1.15). Returns [n, H, W] bool.

    Only +, *, abs, min/max and comparisons: they round identically in SIMD and scalar code, so a
    pixel never flips with the image's position in the batch (transcendentals could)."""
    au, av = u.abs(), v.abs()
    if label == 0:                                   # disk
        return u * u + v * v <= 1.0
    if label == 1:                                   # ring
        d2 = u * u + v * v
        return (d2 <= 1.0) & (d2 >= 0.5 ** 2)
    if label == 2:                                   # square
        return torch.maximum(au, av) <= 0.8
    if label == 3:                                   # hollow square
        m = torch.maximum(au, av)
        return (m <= 0.85) & (m >= 0.45)
    if label == 4:                                   # equilateral triangle, circumradius 1.15
        return (v >= -0.575) & (v <= 1.15 - _SQRT3 * au)
    if label == 5:                                   # plus
        return (torch.minimum(au, av) <= 0.3) & (torch.maximum(au, av) <= 1.0)
    if label == 6:                                   # five-pointed star
        count = sum((u * nx + v * ny <= _STAR_APOTHEM).to(torch.uint8) for nx, ny in _STAR_NORMALS)
        return count >= 4
    if label == 7:                                   # half-disk, flat side down, centred on its box
        w = v + 0.4
        return (u * u + w * w <= 1.0) & (w >= 0.0)
    if label == 8:                                   # bar
        return (au <= 1.05) & (av <= 0.33)
    if label == 9:                                   # L shape
        in_box = (au <= 0.75) & (av <= 0.75)
        return in_box & ((u <= -0.3) | (v <= -0.3))
    raise BadValue(f"unknown shape label {label}")


@lru_cache(maxsize=8)
def _noise_bank(seed: int, image_size: int) -> Tensor:
    """[64, 3, S, S] float32 Gaussian noise fields in grey levels, field j with std 10 * j / 63. Each image
    adds one of them (picked by its hash): per-pixel noise stays deterministic by index without
    hashing every pixel."""
    generator = torch.Generator().manual_seed(0x5EED0000 + seed)   # torch's CPU RNG is platform-independent
    std = torch.linspace(0.0, 10.0, _NOISE_BANK_SIZE).view(-1, 1, 1, 1)
    return torch.randn(_NOISE_BANK_SIZE, 3, image_size, image_size, generator=generator) * std


def render_shapes(index: Tensor, seed: int, image_size: int, palette: str = "colour"
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render images `index` ([n] int64) of the shapes set, in an order grouped by class (so each
    class's shape test runs on one contiguous slice). Returns (order [n], images [n, 3, S, S] uint8,
    labels [n] int64, masks [n, S, S] bool), where row j is the image index[order[j]].
    palette: one of PALETTES; it changes the colours only, never which pixels belong to what."""
    if palette not in PALETTES:
        raise BadValue(f"palette must be one of {PALETTES}, got {palette!r}")
    S = image_size
    p = _uniforms(seed, index, _NUM_PARAMS)                           # [n, P] float64
    labels = (p[:, _P_LABEL] * len(SHAPE_CLASSES)).long().clamp_(max=len(SHAPE_CLASSES) - 1)
    labels, order = torch.sort(labels, stable=True)
    p, n = p[order], index.shape[0]

    # Per-image geometry in float64, then rounded to float32: sin/cos may differ in the last bit between
    # vectorised and scalar code paths, and rounding to float32 hides that (see _shape_inside).
    r = (_SIZE_RANGE[0] + (_SIZE_RANGE[1] - _SIZE_RANGE[0]) * p[:, _P_SIZE]) * S   # shape size in pixels
    margin = 1.1 * r                                                  # keep the shape (almost) fully inside
    angle = 2 * math.pi * p[:, _P_ANGLE]
    cx, cy, cos_r, sin_r = torch.stack([
        margin + (S - 2 * margin) * p[:, _P_CX],
        margin + (S - 2 * margin) * p[:, _P_CY],
        torch.cos(angle) / r,                                         # rotation and 1/r folded together
        torch.sin(angle) / r,
    ]).float().view(4, n, 1, 1)

    coords = torch.arange(S, dtype=torch.float32) + 0.5               # pixel centres
    xs, ys = coords.view(1, 1, S), coords.view(1, S, 1)

    masks = torch.empty(n, S, S, dtype=torch.bool)
    stop = 0
    for c, count in enumerate(torch.bincount(labels, minlength=len(SHAPE_CLASSES)).tolist()):
        if count == 0:                                                # a loop over 10 classes, not images
            continue
        sl = slice(stop, stop + count)
        stop += count
        dx, dy = xs - cx[sl], ys - cy[sl]                             # [k, 1, S], [k, S, 1]
        u = dx * cos_r[sl] + dy * sin_r[sl]                           # [k, S, S] in the shape's frame
        v = dy * cos_r[sl] - dx * sin_r[sl]
        masks[sl] = _shape_inside(c, u, v)

    # Clutter: up to 4 thin capsules (blobs and short strokes), drawn BEHIND the shape so they never
    # change its silhouette, only the background a linear read-out of the pixels has to see through.
    num_distractors = 1 + (p[:, _P_NUM_DISTRACTORS] * _MAX_DISTRACTORS).long()   # 1..4
    d = p[:, _P_DISTRACTORS:].view(n, _MAX_DISTRACTORS, _D_STRIDE)               # [n, K, 8]
    active = torch.arange(_MAX_DISTRACTORS).view(1, -1) < num_distractors.view(-1, 1)      # [n, K]
    d_cx, d_cy, d_cos, d_sin, d_half, d_rad2 = torch.stack([          # each [n, K]
        d[..., 0] * S,
        d[..., 1] * S,
        torch.cos(2 * math.pi * d[..., 2]),
        torch.sin(2 * math.pi * d[..., 2]),
        0.14 * S * d[..., 3],                                         # half length: 0 (a dot) .. 4.5 px
        torch.where(active, ((0.02 + 0.025 * d[..., 4]) * S) ** 2, -1.0),  # radius^2 (0.6 .. 1.4 px); -1:
    ]).float()                                                        # inactive distractors hit nothing

    # layer id per pixel: 0 = background, 1..K = distractor k, K + 1 = the shape. Distractors are tiny, so
    # each is tested only on a small window of pixels around it (~7x fewer pixels than the full image).
    win = min(S, math.ceil(2 * (0.14 * S + 0.045 * S)) + 3)          # covers the longest, thickest capsule
    ox = (d_cx.floor().long() - win // 2).clamp(0, S - win)          # [n, K] window origins
    oy = (d_cy.floor().long() - win // 2).clamp(0, S - win)
    offs = torch.arange(win)
    wx = (ox.unsqueeze(-1) + offs).float() + 0.5                       # [n, K, win] pixel centres
    wy = (oy.unsqueeze(-1) + offs).float() + 0.5
    dx = (wx - d_cx.unsqueeze(-1)).unsqueeze(-2)                      # [n, K, 1, win]
    dy = (wy - d_cy.unsqueeze(-1)).unsqueeze(-1)                      # [n, K, win, 1]
    c_, s_ = d_cos[..., None, None], d_sin[..., None, None]
    along = (dx * c_ + dy * s_).abs()                                 # [n, K, win, win]
    across = dy * c_ - dx * s_
    beyond = (along - d_half[..., None, None]).clamp_(min=0.0)
    hit = beyond * beyond + across * across <= d_rad2[..., None, None]
    # paint by scatter-max of k + 1: where capsules overlap, the later one is on top
    value = hit.to(torch.uint8) * (torch.arange(1, _MAX_DISTRACTORS + 1, dtype=torch.uint8).view(1, -1, 1, 1))
    flat = ((oy.unsqueeze(-1) + offs).unsqueeze(-1) * S + (ox.unsqueeze(-1) + offs).unsqueeze(-2))  # [n, K, win, win]
    layer = torch.zeros(n, S * S, dtype=torch.uint8)
    layer.scatter_reduce_(1, flat.view(n, -1), value.view(n, -1), "amax")
    layer = layer.view(n, S, S)
    layer.masked_fill_(masks, _MAX_DISTRACTORS + 1)

    # Colours: every channel of the shape differs from the background base colour by 0.3..0.7, so the
    # shape is always visible, but which colour is independent of the class; distractors differ from the
    # shape colour by >= 0.25 per channel so they never merge into its silhouette.
    # In "mono" the same slots give grey levels: background 0.75..0.85, shape 0.15..0.25, clutter 0.45..0.55.
    if palette == "colour":
        bg = p[:, _P_BG:_P_BG + 3]                                                   # [n, 3]
        fg = (bg + 0.3 + 0.4 * p[:, _P_FG:_P_FG + 3]) % 1.0
        d_col = (fg.unsqueeze(1) + 0.25 + 0.5 * d[..., 5:8]) % 1.0                    # [n, K, 3]
    else:
        bg = (0.75 + 0.1 * p[:, _P_BG:_P_BG + 1]).expand(-1, 3)
        fg = (0.15 + 0.1 * p[:, _P_FG:_P_FG + 1]).expand(-1, 3)
        d_col = (0.45 + 0.1 * d[..., 5:6]).expand(-1, -1, 3)
    # palette in 0..255 units plus 0.5, so that the final clamp + truncation to uint8 rounds
    colours = torch.cat([bg.unsqueeze(1), d_col, fg.unsqueeze(1)], dim=1).float() * 255.0 + 0.5   # [n, K + 2, 3]
    flat = layer.view(n, 1, S * S).long().expand(n, 3, S * S)
    images = colours.transpose(1, 2).gather(2, flat).view(n, 3, S, S)               # [n, 3, S, S]

    # uneven lighting: a linear colour ramp over the whole image (up to +-0.14 at the corners)
    g_angle = 2 * math.pi * p[:, _P_GRAD_ANGLE]
    delta = (0.4 * p[:, _P_BG_DELTA:_P_BG_DELTA + 3] - 0.2) * 255.0                    # [n, 3]
    if palette == "mono":                                                            # a grey ramp
        delta = delta[:, :1].expand(-1, 3)
    gx = (torch.cos(g_angle).unsqueeze(1) * delta / S).float().view(n, 3, 1, 1)
    gy = (torch.sin(g_angle).unsqueeze(1) * delta / S).float().view(n, 3, 1, 1)
    images += (xs - S / 2) * gx                    # in-place broadcast adds: no [n, 3, S, S] temporaries
    images += (ys - S / 2) * gy

    # mild pixel noise: one of 64 fixed noise fields (std 0 .. 10 grey levels), picked by the hash
    images += _noise_bank(seed, S)[(p[:, _P_NOISE] * _NOISE_BANK_SIZE).long()]
    images = images.clamp_(0.0, 255.0).to(torch.uint8)
    return order, images, labels, masks


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of [N, H, W] bool masks -> [N, 4] float32 (x0, y0, x1, y1), x1/y1 exclusive
    (all zeros for an empty mask)."""
    n, H, W = masks.shape
    m = masks.view(torch.uint8)                                       # max over uint8 is faster than any()
    rows, cols = m.amax(dim=2), m.amax(dim=1)                         # [N, H], [N, W]
    first = lambda r: r.argmax(dim=1)                                 # noqa: E731  first nonzero
    x0, y0 = first(cols), first(rows)
    x1, y1 = W - first(cols.flip(1)), H - first(rows.flip(1))
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * (rows.amax(dim=1, keepdim=True) > 0)
