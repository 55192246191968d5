"""Image folders as data sets: PATH/<class>/<image> (or PATH/train/<class>/...), decoded once into
an ImageDataset (datasets.load_dataset("imagefolder:PATH")), or file by file by the streaming path
(stream.py) for folders larger than memory. Held in memory, images are centre-cropped to a square
and resized (one uint8 tensor, cached under root/cache/), and unreadable files are skipped, counted
and reported once; `decode_original` and `random_resized_crop` instead crop a decoded original and
then resize it (antialiased), as the reference's RandomResizedCrop does (stream.ImageFolderStream's crop).
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from jepa_lite.data.images import ImageDataset, _balanced_indices
from jepa_lite.errors import BadValue

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises on a file it cannot read: not an image (UnidentifiedImageError, an OSError),
    truncated or corrupt data (OSError, SyntaxError, ValueError, EOFError), a decompression bomb."""
    from PIL import Image

    return (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def resolve_imagefolder(path: Path, split: str) -> Path:
    """The class-folder root holding `split` under `path` (see DATASET_SPECS)."""
    if not path.is_dir():
        raise BadValue(f"imagefolder: {path} does not exist or is not a directory; expected a folder with one "
                         f"subfolder per class (PATH/<class>/<image>), or PATH/train/ and PATH/test/ (or val/)")
    test_dir = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if (path / "train").is_dir():
        if split == "train":
            return path / "train"
        if test_dir is None:
            raise BadValue(f"imagefolder: {path} has a train/ but no test/ or val/ subfolder for the test split; "
                             f"add one, or pass a separate test folder (--test-data imagefolder:PATH2)")
        return test_dir
    if split == "train":
        return path
    raise BadValue(f"imagefolder: {path} has no train/ and test/ (or val/) subfolders, so it only provides the "
                     f"train split; pass a separate test folder (--test-data imagefolder:PATH2)")


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def scan_imagefolder(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, labels and class names of a class-folder root (sorted, like torchvision's ImageFolder).
    A folder with images but no class subfolders is one class named after the folder."""
    classes, files, labels = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(Path(d) / f for d, _, names in os.walk(sub) for f in names if is_image(f))
        if found:
            labels += [len(classes)] * len(found)
            classes.append(sub.name)
            files += found
    if not files:
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p.name))
        labels, classes = [0] * len(files), [folder.name]
    if not files:
        raise BadValue(f"imagefolder: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}; "
                         f"expected {folder}/<class>/<image>")
    return files, labels, classes


def decode(path: Path, size: int | None, square: bool = True) -> np.ndarray | None:
    """One image file -> [size, size, 3] uint8 (center-cropped to square, resized), or None if unreadable.
    size None keeps the square crop's own size; square=False (with size None): the whole image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft("RGB", (size, size))       # JPEG: decode at a reduced scale when much larger
            im = im.convert("RGB")                   # grayscale, palette, RGBA (alpha dropped), CMYK -> RGB
            if not square:
                return np.asarray(im, dtype=np.uint8)
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            if size is not None and s != size:
                im = im.resize((size, size), Image.BICUBIC)     # PIL antialiases when shrinking
            return np.asarray(im, dtype=np.uint8)
    except _decode_errors():  # truncated / corrupt / not an image: the caller counts and reports these
        return None


def decode_original(path: Path) -> torch.Tensor:
    """One image file, whole -> [3, H, W] uint8 RGB (torchvision.io's decoders; formats they do not read,
    such as BMP or TIFF, through PIL). An unreadable file is a ValueError naming it."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as torchvision_error:            # an unsupported format, or corrupt data
        pixels = decode(path, None, square=False)
        if pixels is None:
            raise BadValue(f"imagefolder: cannot read {path}: {torchvision_error}") from None
        return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).contiguous()


def random_resized_crop(image: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                        generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop drawn from `generator`: an area fraction uniform in `scale` and an
    aspect ratio log-uniform in `ratio` (10 tries, else the largest centred crop of the closest allowed
    ratio), a uniform position, then an antialiased bilinear resize to size x size. [3, H, W] uint8 -> [3,
    size, size] uint8. The crop can reach every pixel of the image, its sides included."""
    from torchvision.transforms.v2.functional import resized_crop

    H, W = image.shape[-2:]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        area = H * W * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= W and 0 < h <= H:
            top = int(torch.randint(H - h + 1, (1,), generator=generator))
            left = int(torch.randint(W - w + 1, (1,), generator=generator))
            break
    else:
        aspect = W / H
        if aspect < ratio[0]:
            w, h = W, round(W / ratio[0])
        elif aspect > ratio[1]:
            w, h = round(H * ratio[1]), H
        else:
            w, h = W, H
        top, left = (H - h) // 2, (W - w) // 2
    return resized_crop(image, top, left, h, w, [size, size], antialias=True)


def decode_all(files: list[Path], size: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode files in parallel into [N, size, size, 3] uint8; also returns the [N] bool 'readable' flags."""
    out = np.zeros((len(files), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(files), dtype=bool)

    def work(lo: int, hi: int) -> None:            # PIL releases the GIL while decoding, so threads help
        for i in range(lo, hi):
            a = decode(files[i], size)
            if a is not None:
                out[i], ok[i] = a, True

    step = max(1, math.ceil(len(files) / (4 * threads)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for f in [pool.submit(work, lo, min(lo + step, len(files))) for lo in range(0, len(files), step)]:
            f.result()
    return out, ok


def load_imagefolder(path: str, split: str, root: Path | None, image_size: int | None,
                      max_images: int | None) -> ImageDataset:
    folder = resolve_imagefolder(Path(path).expanduser(), split)
    files, labels, classes = scan_imagefolder(folder)
    if max_images is not None and max_images < len(files):
        keep = _balanced_indices(torch.tensor(labels), max_images).tolist()
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]

    # Optional on-disk cache of the decoded tensor, keyed by every file's path, size and mtime.
    cache_file = None
    if root is not None:
        h = hashlib.sha1(f"{folder.resolve()}|{image_size}".encode())
        for f in files:
            st = f.stat()
            h.update(f"|{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        cache_file = Path(root) / "cache" / f"imagefolder-{folder.name}-{h.hexdigest()[:16]}.pt"
        if cache_file.is_file():
            try:
                c = torch.load(cache_file, weights_only=True)
                if c["skipped"]:
                    warnings.warn(f"imagefolder: skipped {c['skipped']} unreadable image file(s) under {folder} "
                                  f"(cached result: {cache_file})")
                return ImageDataset(c["images"], c["labels"], c["classes"], name=f"imagefolder:{path}[{split}]")
            except Exception as e:  # a stale or broken cache is rebuilt, never fatal
                warnings.warn(f"imagefolder: ignoring unreadable cache {cache_file}: {e}")

    size = image_size
    if size is None:                                 # default: the first readable image's (square crop) size
        for f in files:
            first = decode(f, None)
            if first is not None:
                size = first.shape[0]
                break
        else:
            raise BadValue(f"imagefolder: none of the {len(files)} image files under {folder} could be read")
    pixels, ok = decode_all(files, size, threads=min(8, os.cpu_count() or 1))
    skipped = int((~ok).sum())
    if skipped == len(files):
        raise BadValue(f"imagefolder: none of the {len(files)} image files under {folder} could be read")
    if skipped:
        bad = [str(files[i]) for i in np.flatnonzero(~ok)[:3]]
        warnings.warn(f"imagefolder: skipped {skipped} unreadable image file(s) of {len(files)} under {folder} "
                      f"(e.g. {', '.join(bad)})")
    images = torch.from_numpy(pixels[ok]).permute(0, 3, 1, 2).contiguous()
    label_t = torch.tensor(labels, dtype=torch.int64)[torch.from_numpy(ok)]
    ds = ImageDataset(images, label_t, classes, name=f"imagefolder:{path}[{split}]")

    if cache_file is not None:                       # temp file + os.replace: readers never see half a file
        tmp = cache_file.with_name(f"{cache_file.name}.tmp{os.getpid()}")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"images": images, "labels": label_t, "classes": classes, "skipped": skipped}, tmp)
            os.replace(tmp, cache_file)
        except (OSError, RuntimeError) as e:         # read-only or full disk: the cache is optional
            tmp.unlink(missing_ok=True)
            warnings.warn(f"imagefolder: could not write cache {cache_file}: {e}")
    return ds
