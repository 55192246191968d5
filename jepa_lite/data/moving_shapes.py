"""The procedural "moving shapes" clips (notebook 11): one shape of the shapes set slides, or grows or
shrinks, over a still background, for T frames of S px.

Clip i is a pure function of (seed, i, frames, image_size): its shape class, motion, size, path, colours,
lighting ramp, clutter and noise come from the same counter-based hash as the shapes images (shapes.py),
and the shape is drawn with the same inside-tests (shapes._shape_inside), frame by frame, all frames of
all clips of a chunk at once.

The motion classes come in pairs, a motion and its reverse (MOTION_CLASSES):

    0 right   1 left      the shape slides along x (by 30-42% of the image over the clip)
    2 down    3 up        the same along y
    4 grow    5 shrink    the shape, in place, scales by 1.8-2.3x over the clip

A clip of class 2k+1 is exactly the clip of class 2k played backwards (every parameter is drawn for the
pair; `reverse` flips which member is rendered): a clip and its reverse hold the same set of frames. So
nothing computed from the frames without their order (one frame, the mean frame, an image encoder's
features averaged over the frames) can tell a motion from its reverse better than chance: the direction
within a pair needs two frames in order. The pair itself (horizontal, vertical or scale) shows a little in
the frames: how far they spread, how large the shape gets.

Two palettes, as for the images (shapes.PALETTES): "colour" draws every clip's colours, "mono" the same
clips in the grey levels of shapes-mono (a dark shape on a light background). Colours drawn apart from
the motion are, as notebook 06 shows for images, among the easiest things to predict about a hidden
block; in grey what is left to predict is the shape and where it goes.

    make_moving_shapes(num_clips, seed, frames, image_size, palette=...) -> ClipDataset
    ClipDataset.clips [N, T, 3, S, S] uint8, shape_labels, motion_labels, frames_as_images()
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

from jepa_lite.data.images import ImageDataset
from jepa_lite.data.shapes import PALETTES, SHAPE_CLASSES, _shape_inside, _uniforms
from jepa_lite.errors import BadValue

MOTION_CLASSES = ["right", "left", "down", "up", "grow", "shrink"]
MOTION_PAIRS = ["horizontal", "vertical", "scale"]     # motion class m belongs to pair m // 2; m ^ 1 is its reverse
MAX_FRAMES = 64

# the clips' own stream: the same hash as the shapes images, but another key, so that clip i and shapes
# image i of one seed share no random numbers
_SALT = 0x4D4F5645 << 24                                # "MOVE"

# Parameter slots of one clip in the counter-based stream (adding one never shifts the others).
_P_SHAPE, _P_MOTION, _P_SIZE, _P_ALONG, _P_ACROSS, _P_ANGLE, _P_TRAVEL, _P_NOISE = range(8)
_P_BG, _P_FG, _P_BG_DELTA = 8, 11, 14                   # 3 channels each
_P_GRAD_ANGLE, _P_NUM_DISTRACTORS = 17, 18
_P_DISTRACTORS, _D_STRIDE = 20, 6                       # per distractor: cx, cy, radius, rgb
_MAX_DISTRACTORS = 3
_P_FRAME_NOISE = _P_DISTRACTORS + _D_STRIDE * _MAX_DISTRACTORS     # one slot per frame: its noise field
_NUM_PARAMS = _P_FRAME_NOISE + MAX_FRAMES

# geometry, as fractions of the image size S
_SLIDE_SIZE = (0.14, 0.20)         # sliding shapes: size r (~ radius)
_SLIDE_TRAVEL = (0.30, 0.42)       # ... and how far they travel over the clip
_GROW_SIZE = (0.10, 0.13)          # growing shapes: the small size
_GROW_FACTOR = (1.8, 2.3)          # ... times this is the large one
_MARGIN = 1.2                      # every shape lies inside a disk of radius 1.15 r: fully in the image
_NOISE_BANK_SIZE = 64
_NOISE_STD = 8.0                   # grey levels, at most (each clip draws its own 0..8)


@lru_cache(maxsize=8)
def _noise_bank(seed: int, image_size: int) -> Tensor:
    """[64, 3, S, S] float32 unit Gaussian noise fields; each frame adds one (picked by the hash), scaled
    by its clip's noise level."""
    generator = torch.Generator().manual_seed(0x5EED1111 + seed)
    return torch.randn(_NOISE_BANK_SIZE, 3, image_size, image_size, generator=generator)


def _clip_params(index: Tensor, seed: int) -> Tensor:
    return _uniforms(seed + _SALT, index, _NUM_PARAMS)


def clip_labels(index: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """(shape labels, motion labels) of clips `index` [n] int64, without rendering them."""
    p = _clip_params(index, seed)
    return _labels(p)


def _labels(p: Tensor) -> tuple[Tensor, Tensor]:
    shape = (p[:, _P_SHAPE] * len(SHAPE_CLASSES)).long().clamp_(max=len(SHAPE_CLASSES) - 1)
    motion = (p[:, _P_MOTION] * len(MOTION_CLASSES)).long().clamp_(max=len(MOTION_CLASSES) - 1)
    return shape, motion


def _trajectories(p: Tensor, motion: Tensor, frames: int, S: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per clip and frame: centre x, y and size r in pixels, each [n, T] float64. The pair's forward
    motion (right, down, grow) runs with time tau = t / (T - 1); its reverse with tau = 1 - t / (T - 1)."""
    n = p.shape[0]
    pair, backwards = motion // 2, (motion % 2).bool()
    t = torch.arange(frames, dtype=torch.float64) / (frames - 1)                    # [T]
    tau = torch.where(backwards[:, None], 1.0 - t, t)                              # [n, T]
    # sliding: size r, travel L along the axis, starting so that the whole path stays inside
    r_slide = (_SLIDE_SIZE[0] + (_SLIDE_SIZE[1] - _SLIDE_SIZE[0]) * p[:, _P_SIZE]) * S
    travel = (_SLIDE_TRAVEL[0] + (_SLIDE_TRAVEL[1] - _SLIDE_TRAVEL[0]) * p[:, _P_TRAVEL]) * S
    m = _MARGIN * r_slide
    start = m + (S - 2 * m - travel) * p[:, _P_ALONG]
    along = start[:, None] + travel[:, None] * tau                                 # [n, T]
    across = (m + (S - 2 * m) * p[:, _P_ACROSS])[:, None].expand(n, frames)
    # growing: from r_small to r_small * factor (geometrically: the same ratio every frame), in place
    r_small = (_GROW_SIZE[0] + (_GROW_SIZE[1] - _GROW_SIZE[0]) * p[:, _P_SIZE]) * S
    factor = _GROW_FACTOR[0] + (_GROW_FACTOR[1] - _GROW_FACTOR[0]) * p[:, _P_TRAVEL]
    r_grow = r_small[:, None] * factor[:, None] ** tau                             # [n, T]
    m_grow = _MARGIN * r_small * factor
    gx = (m_grow + (S - 2 * m_grow) * p[:, _P_ALONG])[:, None].expand(n, frames)
    gy = (m_grow + (S - 2 * m_grow) * p[:, _P_ACROSS])[:, None].expand(n, frames)
    horizontal, vertical = (pair == 0)[:, None], (pair == 1)[:, None]
    cx = torch.where(horizontal, along, torch.where(vertical, across, gx))
    cy = torch.where(horizontal, across, torch.where(vertical, along, gy))
    r = torch.where((pair == 2)[:, None], r_grow, r_slide[:, None].expand(n, frames))
    return cx, cy, r


def render_moving_shapes(index: Tensor, seed: int, frames: int = 8, image_size: int = 32,
                         reverse: bool = False, palette: str = "colour") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render clips `index` ([n] int64). Returns (clips [n, T, 3, S, S] uint8, shape labels [n],
    motion labels [n], masks [n, T, S, S] bool: the shape's pixels), row j being clip index[j].
    reverse=True renders each clip's reverse: its frames in the opposite order, its motion label m ^ 1.
    palette: "colour" or "mono" (shapes.PALETTES): the same clips, in the grey levels of shapes-mono."""
    if palette not in PALETTES:
        raise BadValue(f"palette must be one of {PALETTES}, got {palette!r}")
    if not 2 <= frames <= MAX_FRAMES:
        raise BadValue(f"frames must be in 2..{MAX_FRAMES}, got {frames}")
    if image_size < 8:
        raise BadValue(f"image_size must be >= 8, got {image_size}")
    S, T, n = image_size, frames, index.shape[0]
    p = _clip_params(index, seed)                                                  # [n, P] float64
    shape, motion = _labels(p)
    if reverse:
        motion = motion ^ 1
    cx, cy, r = _trajectories(p, motion, T, S)
    angle = 2 * math.pi * p[:, _P_ANGLE][:, None]
    # geometry rounded to float32 (as shapes.py: the inside-tests then never depend on the batch)
    cx, cy, cos_r, sin_r = torch.stack([cx, cy, (torch.cos(angle) / r), (torch.sin(angle) / r)]).float()
    coords = torch.arange(S, dtype=torch.float32) + 0.5                            # pixel centres
    xs, ys = coords.view(1, 1, 1, S), coords.view(1, 1, S, 1)

    masks = torch.empty(n, T, S, S, dtype=torch.bool)
    for c in range(len(SHAPE_CLASSES)):                                            # a loop over classes
        rows = (shape == c).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        geo = [g[rows][..., None, None] for g in (cx, cy, cos_r, sin_r)]          # each [k, T, 1, 1]
        dx, dy = xs - geo[0], ys - geo[1]                                          # [k, T, 1, S], [k, T, S, 1]
        u = dx * geo[2] + dy * geo[3]                                              # [k, T, S, S]
        v = dy * geo[2] - dx * geo[3]
        masks[rows] = _shape_inside(c, u, v)

    # the still background: base colour, 1-3 clutter dots (behind the shape), a lighting ramp
    d = p[:, _P_DISTRACTORS:_P_FRAME_NOISE].view(n, _MAX_DISTRACTORS, _D_STRIDE)
    active = torch.arange(_MAX_DISTRACTORS).view(1, -1) <= (p[:, _P_NUM_DISTRACTORS] * _MAX_DISTRACTORS).long()[:, None]
    if palette == "colour":
        bg = p[:, _P_BG:_P_BG + 3]                                                 # [n, 3]
        fg = (bg + 0.3 + 0.4 * p[:, _P_FG:_P_FG + 3]) % 1.0                        # >= 0.3 from bg per channel
        d_col = (fg[:, None] + 0.25 + 0.5 * d[..., 3:6]) % 1.0                     # never the shape's colour
    else:                               # shapes-mono's grey levels: light background, dark shape, mid clutter
        bg = (0.75 + 0.1 * p[:, _P_BG:_P_BG + 1]).expand(-1, 3)
        fg = (0.15 + 0.1 * p[:, _P_FG:_P_FG + 1]).expand(-1, 3)
        d_col = (0.45 + 0.1 * d[..., 3:4]).expand(-1, -1, 3)
    d_x, d_y, d_rad2 = torch.stack([d[..., 0] * S, d[..., 1] * S,
                                    torch.where(active, ((0.03 + 0.03 * d[..., 2]) * S) ** 2, -1.0)]).float()
    dist2 = (xs - d_x[..., None, None]) ** 2 + (ys - d_y[..., None, None]) ** 2     # [n, K, S, S]
    hit = dist2 <= d_rad2[..., None, None]
    background = (bg.float() * 255.0)[:, :, None, None].expand(n, 3, S, S).clone()
    for k in range(_MAX_DISTRACTORS):                                              # later dots on top
        colour = (d_col[:, k].float() * 255.0)[:, :, None, None]
        background = torch.where(hit[:, k, None], colour, background)
    g_angle = 2 * math.pi * p[:, _P_GRAD_ANGLE]
    delta = (0.4 * p[:, _P_BG_DELTA:_P_BG_DELTA + 3] - 0.2) * 255.0                   # up to +-0.14 at corners
    if palette == "mono":                                                          # a grey ramp
        delta = delta[:, :1].expand(-1, 3)
    gx = (torch.cos(g_angle)[:, None] * delta / S).float().view(n, 3, 1, 1)
    gy = (torch.sin(g_angle)[:, None] * delta / S).float().view(n, 3, 1, 1)
    ramp = (xs[0] - S / 2) * gx + (ys[0] - S / 2) * gy                             # [n, 3, S, S]

    # frames: the shape over the background, the ramp over both, then per-frame noise (+0.5: round)
    shape_colour = (fg.float() * 255.0)[:, None, :, None, None]                    # [n, 1, 3, 1, 1]
    clips = torch.where(masks[:, :, None], shape_colour, background[:, None])     # [n, T, 3, S, S]
    clips += (ramp + 0.5)[:, None]
    # the noise field of frame t is picked by the slot of its pair's time (the reverse's frame t is the
    # forward's frame T-1-t, with the same noise), so a reversed clip is exactly the clip backwards
    slot = torch.arange(T).expand(n, T)
    slot = torch.where((motion % 2).bool()[:, None], T - 1 - slot, slot)
    pick = (p[:, _P_FRAME_NOISE:_P_FRAME_NOISE + T].gather(1, slot) * _NOISE_BANK_SIZE).long()
    level = (_NOISE_STD * p[:, _P_NOISE]).float().view(n, 1, 1, 1, 1)
    clips += _noise_bank(seed, S)[pick] * level
    return clips.clamp_(0.0, 255.0).to(torch.uint8), shape, motion, masks


@dataclass
class ClipDataset:
    """Clips held in memory as one uint8 tensor, with a shape and a motion label each."""
    clips: Tensor                        # [N, T, 3, S, S] uint8
    shape_labels: Tensor                 # [N] int64, index into shape_classes
    motion_labels: Tensor                # [N] int64, index into motion_classes
    shape_classes: list[str]
    motion_classes: list[str]
    masks: Tensor | None = None          # [N, T, S, S] bool, the shape's pixels in each frame
    name: str = ""

    def __post_init__(self) -> None:
        c = self.clips
        if c.ndim != 5 or c.shape[2] != 3 or c.dtype != torch.uint8:
            raise BadValue(f"clips must be [N, T, 3, H, W] uint8, got {tuple(c.shape)} {c.dtype}")
        for name in ("shape_labels", "motion_labels"):
            if getattr(self, name).shape != (c.shape[0],):
                raise BadValue(f"{name} must be [N={c.shape[0]}], got {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return self.clips.shape[0]

    @property
    def num_frames(self) -> int:
        return self.clips.shape[1]

    @property
    def image_size(self) -> int:
        return self.clips.shape[3]

    # the names an ImageDataset has, so that code written for images reads clips: images [N, T, 3, S, S],
    # labels and classes the motion (evaluation.probes.extract_features takes these clips as they are)
    @property
    def images(self) -> Tensor:
        return self.clips

    @property
    def labels(self) -> Tensor:
        return self.motion_labels

    @property
    def classes(self) -> list[str]:
        return self.motion_classes

    @property
    def motion_pairs(self) -> Tensor:
        """[N] int64: 0 horizontal, 1 vertical, 2 scale (MOTION_PAIRS), what the frames can show."""
        return self.motion_labels // 2

    def to(self, device: torch.device | str) -> "ClipDataset":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, clips=move(self.clips), shape_labels=move(self.shape_labels),
                       motion_labels=move(self.motion_labels), masks=move(self.masks))

    def subset(self, indices: Tensor | Sequence[int] | slice) -> "ClipDataset":
        """The clips at `indices` (a slice, ints, or a [N] bool mask), in that order."""
        if isinstance(indices, Tensor) and indices.dtype == torch.bool:
            indices = indices.nonzero().squeeze(1)
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.long).to(self.clips.device)
        pick = lambda t: None if t is None else t[indices]  # noqa: E731
        return replace(self, clips=pick(self.clips), shape_labels=pick(self.shape_labels),
                       motion_labels=pick(self.motion_labels), masks=pick(self.masks))

    def reversed(self) -> "ClipDataset":
        """Every clip played backwards, relabelled with the reverse motion (m ^ 1): for the rendered
        clips this is exactly what render_moving_shapes(..., reverse=True) draws."""
        return replace(self, clips=self.clips.flip(1), motion_labels=self.motion_labels ^ 1,
                       masks=None if self.masks is None else self.masks.flip(1))

    def frames_as_images(self, frame: int | None = None, labels: str = "shape") -> ImageDataset:
        """The frames as an ImageDataset, for an image encoder: every frame, clip-major ([N * T] images:
        image j is frame j % T of clip j // T, so features.view(N, T, D).mean(1) averages each clip's
        frames), or only frame `frame` of each clip ([N] images). labels: "shape" or "motion" (each
        frame carries its clip's label)."""
        if labels not in ("shape", "motion"):
            raise BadValue(f"labels must be 'shape' or 'motion', got {labels!r}")
        y, names = ((self.shape_labels, self.shape_classes) if labels == "shape"
                    else (self.motion_labels, self.motion_classes))
        if frame is not None:
            if not -self.num_frames <= frame < self.num_frames:
                raise BadValue(f"frame must be in 0..{self.num_frames - 1}, got {frame}")
            masks = None if self.masks is None else self.masks[:, frame]
            return ImageDataset(self.clips[:, frame], y.clone(), list(names), masks=masks,
                                name=f"{self.name} frame {frame}")
        T = self.num_frames
        masks = None if self.masks is None else self.masks.flatten(0, 1)
        return ImageDataset(self.clips.flatten(0, 1), y.repeat_interleave(T), list(names), masks=masks,
                            name=f"{self.name} frames")


def make_moving_shapes(num_clips: int, seed: int = 0, frames: int = 8, image_size: int = 32,
                       start_index: int = 0, keep_masks: bool = False, palette: str = "colour") -> ClipDataset:
    """The moving-shapes clips start_index .. start_index + num_clips - 1 (see the module's docstring).
    keep_masks: also keep the shape's pixels per frame ([N, T, S, S] bool; a third of the clips' memory)."""
    if num_clips < 0 or start_index < 0:
        raise BadValue(f"num_clips and start_index must be >= 0, got {num_clips}, {start_index}")
    if not 2 <= frames <= MAX_FRAMES:
        raise BadValue(f"frames must be in 2..{MAX_FRAMES}, got {frames}")
    S, T = image_size, frames
    clips = torch.empty(num_clips, T, 3, S, S, dtype=torch.uint8)
    shape_labels = torch.empty(num_clips, dtype=torch.int64)
    motion_labels = torch.empty(num_clips, dtype=torch.int64)
    masks = torch.empty(num_clips, T, S, S, dtype=torch.bool) if keep_masks else None
    chunk = max(1, (1 << 19) // (T * S * S))            # 64 clips of 8 x 32 x 32 per chunk: temporaries stay small
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                            # many small ops: one thread (see datasets.make_shapes)
    try:
        for start in range(0, num_clips, chunk):
            stop = min(start + chunk, num_clips)
            index = torch.arange(start_index + start, start_index + stop, dtype=torch.int64)
            c, s, m, mk = render_moving_shapes(index, seed, T, S, palette=palette)
            clips[start:stop], shape_labels[start:stop], motion_labels[start:stop] = c, s, m
            if masks is not None:
                masks[start:stop] = mk
    finally:
        torch.set_num_threads(threads)
    return ClipDataset(clips, shape_labels, motion_labels, list(SHAPE_CLASSES), list(MOTION_CLASSES),
                       masks=masks, name=f"moving-shapes{'-mono' if palette == 'mono' else ''}(seed={seed})")
