"""Multi-band and high-bit-depth images: reading, 8-bit scaling, band counts.

Satellite images (Planet's GeoTIFFs: R, G, B, near-infrared, uint16) do not fit PIL's
modes: PIL reads a 4 x 16-bit TIFF as 8-bit RGBA (the high byte only, the 4th band as
alpha). So TIFFs, recognised by their magic bytes whatever the extension, are read with
tifffile; every other format goes through PIL as before (utils/data/cache.py). Which axis of
a TIFF holds the bands comes from the file's metadata (samples per pixel, planar
configuration, pages; `tiff_layout`), not from the array's shape; a file of one grey page
per band, each its own series (tifffile.TiffWriter.write() once per band), is read as a
stack of those bands (`band_stack`).

Bands. `--channels N` (default 3) keeps the first N bands of every image. A one-band
image (a grey TIFF, or a grey PNG/JPEG: PIL modes L, I;16, F, ...) is repeated to N bands
when N <= 3 (a grey photo for an RGB model); an image with fewer bands than N otherwise is
an error, named by the data check (`band_problems`) with its band count and the largest
--channels that reads it. A model takes N bands through utils.models.channels.

Scaling to 8 bits. 8-bit data is kept as it is. Any other data (uint16, int32, float) is
mapped per band by the rule fitted on the training images (`fit_band_scaling`):

    u8 = clip(round(255 * (x - low[b]) / (high[b] - low[b])), 0, 255)

where low[b] and high[b] are the 1st and 99th percentiles of band b over pixels sampled
from up to 256 training images spread evenly over train.csv (images, not labels, so every
fold shares the rule and the cache). The rule is stored in config.json ("band_scaling")
and in best.pt's meta, so prediction scales test images identically, and it is part of
the image cache key. Without a fitted rule (data that is all 8-bit, or a tool decoding a
single file) the dtype's full range is used: 0..65535 for 16-bit integers, 0..255 or
0..65535 for 32-bit integers, 0..1 or 0..255 for floats (PIL's I;16 rule of old).

One rule per band needs one range: sampled images whose values are 100 times smaller or
larger than the others' (float TIFFs in 0..1 next to ones in 0..1000) would be cached all
black or all white, so `fit_band_scaling` refuses them (DataError naming both groups of
files; `check_ranges`). Rescale such files to the others' range; scaling each image on its
own would hide real differences of brightness between images, so it is not done.
"""
import logging
import os

import numpy as np
from PIL import Image

from utils.common.errors import DataError, preview
from utils.data import heif  # noqa: F401  (registers PIL's HEIC/HEIF opener for every image reader)

log = logging.getLogger(__name__)

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL modes that are not 8-bit
SCALING_PERCENTILES = (1.0, 99.0)
SCALING_IMAGES = 256          # images sampled to fit the scaling
SCALING_PIXELS = 16384        # pixels per sampled image (an even stride over the image)
RANGE_RATIO = 100.0           # an image's magnitude this far from the median one: another range


def is_tiff(path):
    """True when the file starts with a TIFF/BigTIFF signature (content, not extension)."""
    with open(path, "rb") as f:
        return f.read(4) in TIFF_MAGIC


def tiff_layout(series):
    """Where a tifffile series keeps its rows, columns and bands: (row axis, column axis,
    band axis or None for one band), indices into series.shape.

    Decided from the file's own metadata first, in this order:
    1. an axis the file names as bands: 'S' (samples per pixel > 1, contiguous or planar:
       the TIFF tags SamplesPerPixel and PlanarConfiguration) or 'C' (the channel axis of
       ImageJ, OME or tifffile's shape metadata);
    2. grey pages only (one sample per pixel): one page is one band. Length-1 axes carry
       nothing, so a (1, H, W) or (H, W, 1) array is one band;
    3. one exception to 2, where metadata cannot tell: tifffile's own writer stores an
       (H, W, C) array it cannot call RGB (C other than 3 or 4, or photometric='minisblack'
       without planarconfig) as H grey pages of W x C pixels, and a planar (C, H, W) array
       as C pages of H x W, both as a 'shaped' series of axes 'QYX' and the array's shape.
       Of the two candidate band axes (the pages, or the page width) the shorter is taken,
       the pages on a tie: an image is larger than its band count. Write multi-band TIFFs
       with photometric='minisblack' and planarconfig='contig' or 'separate' (one page of
       C samples, as GDAL does) and rule 1 applies instead.
    Other leading axes (time, z, further pages) are not bands: their first index is used.
    """
    shape, axes = tuple(series.shape), series.axes.upper()
    rows, cols = axes.index("Y"), axes.index("X")
    for ax in "SC":
        if ax in axes and shape[axes.index(ax)] > 1:
            return rows, cols, axes.index(ax)
    stack = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    if not stack:
        return rows, cols, None
    band = stack[-1]  # the axis nearest the page: the pages of one image
    if getattr(series, "kind", "") == "shaped" and len(shape) == 3 and axes == "QYX" and shape[2] < shape[0]:
        return 0, 1, 2  # an (H, W, C) array written as H pages of W x C (rule 3)
    return rows, cols, band


def band_stack(series):
    """The series of a TIFF written one page per band (tifffile.TiffWriter.write() called once
    per band files each call as its own series), or None: two or more series, each one band
    of one page (`tiff_layout` finds no band axis, every other axis has length 1), all of one
    shape and dtype. Such a file's bands are its series in file order; a file whose series
    differ (a pyramid, a thumbnail, another page size or dtype) is not a band stack."""
    if len(series) < 2:
        return None
    first = series[0]
    for s in series:
        if tuple(s.shape) != tuple(first.shape) or s.dtype != first.dtype:
            return None
        rows, cols, band = tiff_layout(s)
        if band is not None or int(np.prod(s.shape)) != s.shape[rows] * s.shape[cols]:
            return None
    return list(series)


def _one_band(series):
    """A one-band series as (H, W): Y precedes X in every tifffile series, other axes have length 1."""
    rows, cols, _ = tiff_layout(series)
    return series.asarray().reshape(series.shape[rows], series.shape[cols])


def read_tiff(path):
    """All bands of a TIFF's first image series: (H, W, C) in the file's dtype (no scaling);
    which axis holds the bands: `tiff_layout`; a file of one single-band series per band
    (`band_stack`) gives those series as its C bands."""
    import tifffile  # lazy: only TIFF data sets need tifffile

    with tifffile.TiffFile(path) as tif:
        stack = band_stack(tif.series)
        if stack:
            arr = np.stack([_one_band(s) for s in stack], axis=-1)
            return arr.astype(np.uint8) * 255 if arr.dtype == bool else arr
        series = tif.series[0]
        rows, cols, band = tiff_layout(series)
        arr = series.asarray()
    keep = [rows, cols] + ([band] if band is not None else [])
    arr = np.moveaxis(arr, keep, list(range(-len(keep), 0)))
    while arr.ndim > len(keep):  # other leading axes: the first of each
        arr = arr[0]
    if band is None:
        arr = arr[..., None]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return arr


def tiff_band_count(path):
    """Number of bands of a TIFF's first series, from its header only (`tiff_layout`), or
    its number of series when it is a `band_stack`."""
    import tifffile  # lazy: only TIFF data sets need tifffile

    with tifffile.TiffFile(path) as tif:
        stack = band_stack(tif.series)
        if stack:
            return len(stack)
        series = tif.series[0]
        _, _, band = tiff_layout(series)
        return 1 if band is None else int(series.shape[band])


def check_tiff_header(path):
    """Open a TIFF's header with tifffile. Returns a problem string or None."""
    try:
        shape = _series_shape(path)
    except Exception as e:  # noqa: BLE001 - reported with the file's name
        return f"{path}: not a readable TIFF ({type(e).__name__}: {e})"
    if 0 in shape:
        return f"{path}: image has zero size"
    return None


def _series_shape(path):
    import tifffile  # lazy: only TIFF data sets need tifffile

    with tifffile.TiffFile(path) as tif:
        return tuple(tif.series[0].shape)


GREY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # PIL: one band (+ alpha)


def image_band_count(path):
    """Bands an image file holds: a TIFF's bands (`tiff_layout`); for anything PIL reads,
    1 for a grey image (its one band is repeated like a one-band TIFF's), else 3 (it becomes
    RGB). Raises what tifffile or PIL raise for a broken file."""
    if is_tiff(path):
        return tiff_band_count(path)

    with Image.open(path) as im:
        return 1 if im.mode in GREY_MODES else 3


def readable_channels(count):
    """The largest --channels that reads an image of `count` bands: a one-band image is
    repeated to up to 3 bands, any other gives its first N."""
    return 3 if count == 1 else count


def bands_text(count):
    """'1 band', '4 bands'."""
    return f"{count} band{'' if count == 1 else 's'}"


def channels_hint(counts):
    """What to do about images of these band counts that a --channels value cannot read:
    the --channels value that reads all of them, said so that one band reads right."""
    best = min(readable_channels(c) for c in counts)
    text = f"train with --channels {best}" + (" or fewer" if best > 1 else "")
    if 1 in counts:
        text += " (a one-band image is repeated to 2 or 3 bands; --channels 1 reads its one band as it is)"
    return text


def read_raw(path):
    """The native pixels of a file that is not plain 8-bit: (H, W, C) array in its dtype,
    for TIFFs and PIL's 16/32-bit and float modes; None for 8-bit PIL images."""
    if is_tiff(path):
        return read_tiff(path)

    with Image.open(path) as im:
        if im.mode not in HIGH_DEPTH_MODES:
            return None
        return np.asarray(im)[..., None]


def select_bands(arr, channels, path=""):
    """(H, W, C) -> (H, W, channels): the first `channels` bands; one band repeated when
    channels <= 3. ValueError naming `path` when the image has too few bands."""
    c = arr.shape[2]
    if c >= channels:
        return arr[..., :channels]
    if c == 1 and channels <= 3:
        return np.repeat(arr, channels, axis=2)
    raise ValueError(f"{path}: has {bands_text(c)}, fewer than --channels {channels}; convert it, or "
                     f"{channels_hint([c])}")


def default_range(dtype, arr):
    """(low, high) of the fixed rule used when no scaling was fitted (see the module doc)."""
    if np.issubdtype(dtype, np.floating):
        return 0.0, 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 255.0
    if np.dtype(dtype).itemsize == 2:
        return 0.0, 65535.0
    return 0.0, 65535.0 if int(arr.max(initial=0)) > 255 else 255.0


def to_uint8(arr, scaling=None):
    """(H, W, C) array of any dtype -> uint8 by the fitted per-band rule (or the fixed one)."""
    if arr.dtype == np.uint8:
        return arr
    x = arr.astype(np.float32)
    if scaling:
        c = arr.shape[2]
        low = np.asarray(scaling["low"], np.float32)
        high = np.asarray(scaling["high"], np.float32)
        low, high = np.resize(low, c), np.resize(high, c)  # a rule fitted on fewer bands: cycled
    else:
        low, high = default_range(arr.dtype, arr)
    scale = 255.0 / np.maximum(np.asarray(high, np.float32) - low, 1e-12)
    return np.clip(np.nan_to_num((x - low) * scale) + 0.5, 0, 255).astype(np.uint8)


def resize_bands(arr, size):
    """Resize every band of (H, W, C) to (size, size) bilinearly with PIL (float bands in
    mode F, so 16-bit data keeps its precision until it is scaled)."""
    if arr.shape[:2] == (size, size):
        return arr
    mode, dtype = ("L", np.uint8) if arr.dtype == np.uint8 else ("F", np.float32)
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., b], dtype=dtype), mode).resize(
        (size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)) for b in range(arr.shape[2])]
    return np.stack(out, axis=2)


def decode_raw(arr, size=None, channels=3, scaling=None, path=""):
    """Native (H, W, C) pixels -> uint8 (size, size, channels): bands chosen, resized, scaled."""
    select_bands(arr[:1, :1], channels, path)  # too few bands: fail before any work
    arr = arr[..., :channels]
    if size:
        arr = resize_bands(arr, size)
    # scaled before a one-band image is repeated, so band b always meets rule b
    return np.ascontiguousarray(select_bands(to_uint8(arr, scaling), channels, path))


def fit_band_scaling(files, channels, max_images=SCALING_IMAGES, percentiles=SCALING_PERCENTILES,
                     max_pixels=SCALING_PIXELS):
    """Fit the per-band 8-bit scaling on training images (see the module doc).

    files: image paths (train.csv order); up to `max_images` of them, evenly spaced, are
    read; 8-bit ones are skipped. Returns None when none of them is high-bit-depth, else a
    JSON-ready dict {"rule": "percentile", "percentiles": [1, 99], "low": [C floats],
    "high": [C floats], "images": n sampled, "high_depth_images": n used}. Files that
    cannot be read are skipped (the image cache reports them). Raises DataError when the
    sampled images' ranges differ by RANGE_RATIO or more (`check_ranges`).
    """
    files = list(files)
    if not files:
        return None
    idx = np.unique(np.linspace(0, len(files) - 1, min(len(files), max_images)).round().astype(int))
    samples, used = [], []
    for i in idx:
        try:
            raw = read_raw(files[i])
        except Exception:  # noqa: BLE001 - the cache build names every unreadable file
            continue
        if raw is None or raw.dtype == np.uint8:
            continue
        raw = raw[..., :channels].reshape(-1, min(raw.shape[2], channels))
        step = max(1, len(raw) // max_pixels)
        samples.append(raw[::step].astype(np.float64))
        used.append(files[i])
    if not samples:
        return None
    check_ranges([magnitude(s) for s in samples], used)
    width = max(s.shape[1] for s in samples)
    low, high = [], []
    for b in range(width):
        px = np.concatenate([s[:, b] for s in samples if s.shape[1] > b])
        px = px[np.isfinite(px)]
        lo, hi = (np.percentile(px, percentiles) if len(px) else (0.0, 1.0))
        low.append(float(lo))
        high.append(float(hi) if hi > lo else float(lo) + 1.0)
    log.info("8-bit scaling fitted on %d high-bit-depth images: percentiles %s, low %s, high %s",
             len(samples), list(percentiles), [round(v, 1) for v in low], [round(v, 1) for v in high])
    return {"rule": "percentile", "percentiles": list(percentiles), "low": low, "high": high,
            "images": int(len(idx)), "high_depth_images": len(samples)}


def magnitude(px):
    """The 99th percentile of |x| over finite pixel values (any shape) -> float; 0.0 for none."""
    px = np.abs(np.asarray(px, np.float64).ravel())
    px = px[np.isfinite(px)]
    return float(np.percentile(px, 99)) if len(px) else 0.0


def check_ranges(magnitudes, files, ratio=RANGE_RATIO):
    """Raise DataError when images' magnitudes (`magnitude`) differ from their median by `ratio`
    or more (blank images, magnitude 0, are left out): the message names the files below and
    above, their magnitudes against the median's, and what to do. Otherwise returns None.
    """
    m = np.asarray(magnitudes, np.float64)
    pos = m > 0
    if pos.sum() < 2:
        return
    med = float(np.median(m[pos]))
    low, high = pos & (m * ratio <= med), pos & (m >= med * ratio)
    if not (low.any() or high.any()):
        return
    def group(sel, word):
        names = [str(f) for f, s in zip(files, sel) if s]
        return (f"{len(names)} image(s) {word}, values up to ~{float(np.median(m[sel])):.3g}: "
                f"{preview(names, 4)}")
    parts = [group(s, w) for s, w in ((low, "far below"), (high, "far above")) if s.any()]
    raise DataError(f"high-bit-depth images in different ranges: most sampled images have values up to "
                    f"~{med:.3g}, but " + "; ".join(parts) + f". One 8-bit scaling per band (1st-99th "
                    f"percentile of all images) would cache them {'black' if low.any() else 'white'}; "
                    f"rescale those files to the others' range (e.g. multiply 0..1 floats by "
                    f"{med:.3g}) and run again")


def image_options(record):
    """The load_images options a run recorded (config.json or a checkpoint's meta):
    {"channels": N, "scaling": rule or None}; runs from before bands existed: 3, None."""
    return {"channels": int(record.get("channels") or 3), "scaling": record.get("band_scaling")}


def band_problems(files, channels, what):
    """Check every image's band count against --channels.

    Returns (problems, notes): problems name images with fewer bands than `channels`
    (one-band images are fine for channels <= 3); notes name images whose band count
    differs from the most common one but that still have enough (their first bands are used).
    """
    counts, problems = {}, []
    for f in files:
        if f is None:
            continue
        try:
            counts[f] = image_band_count(f)
        except Exception as e:  # noqa: BLE001 - reported with the file's name
            problems.append(f"{f}: cannot read the image header ({type(e).__name__}: {e})")
    if not counts:
        return problems, []
    values, n = np.unique(list(counts.values()), return_counts=True)
    usual = int(values[np.argmax(n)])
    short = [f for f, c in counts.items() if readable_channels(c) < channels]
    if short:
        shown = ", ".join(f"{os.path.basename(str(f))} ({bands_text(counts[f])})" for f in short[:20])
        problems.append(f"{what}: {len(short)} image(s) have fewer bands than --channels {channels} "
                        f"(most images have {usual}): {shown}{' ...' if len(short) > 20 else ''}; "
                        f"remove or convert them, or {channels_hint({counts[f] for f in short})}")
    # grey photos among RGB ones are read as designed (repeated): not worth a note
    odd = [f for f, c in counts.items() if c != usual and f not in short
           and not (c == 1 and channels <= 3 and usual <= 3)]
    notes = []
    if odd:
        shown = ", ".join(f"{os.path.basename(str(f))} ({bands_text(counts[f])}"
                          f"{', repeated' if counts[f] == 1 and channels > 1 else ''})" for f in odd[:20])
        notes.append(f"{what}: {len(odd)} image(s) have another band count than most ({usual}); "
                     f"the first {channels} band(s) of each are used, a single band repeated: "
                     f"{shown}{' ...' if len(odd) > 20 else ''}")
    return problems, notes
