"""Decode once, augment every epoch: a uint8 image cache per (file list, size).

Images are decoded by content (not extension), converted to RGB, resized to
size x size and stored in one .npy file that is memory-mapped by every reader. TIFFs
(and other multi-band or 16-bit images) go through utils/data/bands.py: the first `channels`
bands, scaled to 8 bits by the fitted rule, so the cache is (N, size, size, channels). The
cache key covers the size, the bands and scaling, and every source file's path, byte size
and mtime, so a changed file makes a new cache. Building uses all cores and shows a progress bar;
undecodable or truncated files are collected and reported together (DataError),
and no cache file is left behind.

The cache is written through a temp file whose full size is reserved first
(utils.common.write_errors.preallocate): a disk without room fails at once with a
WriteFault naming the file, the megabytes needed and free, instead of a bus error
halfway through the memory map. On any failure, Ctrl-C or SIGTERM the decoder workers
are stopped and joined and the temp file is removed; temp files of killed processes are
swept before the next build (utils/common/temp_files.py).
"""
import ctypes
import errno
import hashlib
import json
import logging
import os
import signal
from contextlib import contextmanager
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from utils.data import bands
from utils.common.errors import DataError, report_problems
from utils.common.temp_files import make_temp, sweep
from utils.common.write_errors import WriteFault, found_in_chain, no_room, preallocate, write_fault

log = logging.getLogger(__name__)
NO_ROOM_FIX = "free space or pass --cache-dir"
CACHE_VERSION = 4  # bump when decoding or resizing changes (2: EXIF orientation; 3: tifffile, bands;
#                   4: TIFF band axis from the file's metadata)


def to_rgb(im):
    """Any PIL image -> RGB. Alpha is composited on white; 16/32-bit and float scale to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F" and a.max() <= 1.0:
            top = 1.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def decode_image(path, size=None, channels=3, scaling=None):
    """Decode an image file by content into uint8 (H, W, channels); resized to size x size if given.

    The EXIF orientation tag (cameras, phones) is applied, so pixels are as the image is
    meant to be seen (PIL.ImageOps.exif_transpose), in training and prediction alike.
    TIFFs are read with tifffile and 16-bit/float data scaled by `scaling` (the rule of
    utils.data.bands.fit_band_scaling; None: the dtype's range). ValueError for too few bands.
    """
    if bands.is_tiff(path):
        return bands.decode_raw(bands.read_tiff(path), size, channels, scaling, path)
    with Image.open(path) as im:
        if size and im.format == "JPEG":
            im.draft("RGB", (size, size))  # DCT-domain downscale: several times faster for big JPEGs
        im = ImageOps.exif_transpose(im)
        if scaling and im.mode in bands.HIGH_DEPTH_MODES:
            return bands.decode_raw(np.asarray(im)[..., None], size, channels, scaling, path)
        grey = im.mode in bands.GREY_MODES
        im = to_rgb(im)
        if size:
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        arr = np.asarray(im, dtype=np.uint8)
        if channels == 3:
            return arr
        # a grey image has one band (utils.data.bands.image_band_count), repeated or refused as such
        return np.ascontiguousarray(bands.select_bands(arr[..., :1] if grey else arr, channels, path))


def _decode_job(args):
    i, path, size, channels, scaling = args
    try:
        return i, decode_image(path, size, channels, scaling), None
    except Exception as e:  # reported to the user together with every other bad file
        return i, None, f"{path}: cannot decode ({type(e).__name__}: {e})"


def cache_key(files, size, channels=3, scaling=None):
    """Hex digest over size, cache version, bands, scaling and each file's path, byte size and mtime."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|exif|{size}".encode())
    if channels != 3 or scaling:
        h.update(f"|ch{channels}|{json.dumps(scaling, sort_keys=True)}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"|{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_dir(data_root):
    """DATA/.cache when writable, else ~/.cache/multitag (override: MULTITAG_CACHE)."""
    if os.environ.get("MULTITAG_CACHE"):
        return Path(os.environ["MULTITAG_CACHE"])
    root = Path(data_root)
    if os.access(root, os.W_OK):
        return root / ".cache"
    return Path.home() / ".cache" / "multitag"


def default_workers():
    """Worker processes for decoding and loading: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _worker_init(parent):
    """Decoder processes leave Ctrl-C to the parent (which stops them) and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux): no orphans if the parent is killed
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker(jobs, conn, parent):
    """A decoder process: _decode_job for each of its jobs, results sent through `conn`."""
    _worker_init(parent)
    for job in jobs:
        conn.send(_decode_job(job))
    conn.close()


def _results(conns, n):
    """The n results the workers send through `conns`, as they come."""
    conns, got = list(conns), 0
    while conns:
        for conn in wait(conns):
            try:
                yield conn.recv()
                got += 1
            except EOFError:  # this worker is done (or died: counted below)
                conns.remove(conn)
    if got < n:
        raise RuntimeError(f"an image decoder process died after {got} of {n} images (out of memory?)")


@contextmanager
def _decoded(jobs, workers):
    """An iterator of _decode_job results (in any order); with workers > 1 (and more than 64
    jobs) forked processes, each decoding every workers-th job, stopped and joined on the way
    out whatever happened (an error, Ctrl-C, SIGTERM)."""
    if workers <= 1 or len(jobs) <= 64:
        yield map(_decode_job, jobs)
        return
    # fork: workers only run PIL, and start instantly with the file list inherited
    ctx, procs, conns = get_context("fork"), [], []
    try:
        for w in range(workers):
            recv, send = ctx.Pipe(duplex=False)
            procs.append(ctx.Process(target=_worker, args=(jobs[w::workers], send, os.getpid()), daemon=True))
            procs[-1].start()
            send.close()
            conns.append(recv)
        yield _results(conns, len(jobs))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        for c in conns:
            c.close()


def _open_reserved(tmp, shape, path):
    """A writable uint8 .npy memory map of `shape` at `tmp`, its whole size reserved on disk;
    WriteFault naming `path` when there is no room."""
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    fd = os.open(tmp, os.O_RDWR)
    try:
        preallocate(fd, os.fstat(fd).st_size, path, NO_ROOM_FIX)
    finally:
        os.close(fd)
    return arr


def _cache_fault(exc, path, nbytes):
    """The WriteFault to raise for `exc` while writing the cache `path` of nbytes; None if not a write fault."""
    os_err = found_in_chain(exc)
    if os_err is None or isinstance(os_err, WriteFault):
        return os_err
    if os_err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return no_room(os_err.errno, path, nbytes, NO_ROOM_FIX)
    return write_fault(os_err, path, "pass --cache-dir with a writable folder")


def _build(files, size, path, workers, desc, channels=3, scaling=None):
    shape = (len(files), size, size, channels)
    try:
        fd, tmp = make_temp(path)
    except OSError as e:
        raise _cache_fault(e, path, int(np.prod(shape))) or e
    os.close(fd)
    tmp = Path(tmp)
    jobs = [(i, str(f), size, channels, scaling) for i, f in enumerate(files)]
    bar = tqdm(total=len(files), desc=f"cache {desc} {size}px", unit="img", leave=False, dynamic_ncols=True)
    arr = None
    try:
        arr = _open_reserved(tmp, shape, path)
        problems = []
        with _decoded(jobs, workers) as results:
            for i, img, err in results:
                if err:
                    problems.append(err)
                else:
                    arr[i] = img
                bar.update()
        bar.close()
        report_problems(f"{desc}: images that cannot be decoded; fix or remove them", problems)
        arr.flush()
        arr = None
        os.replace(tmp, path)
    except BaseException as e:
        bar.close()
        arr = None  # unmapped, so the removed file's blocks are free at once
        tmp.unlink(missing_ok=True)
        fault = _cache_fault(e, path, int(np.prod(shape))) if isinstance(e, Exception) else None
        if fault is not None:
            raise fault from None
        raise


def cache_path(files, size, cache_dir, desc="images", channels=3, scaling=None):
    """The .npy file `load_images` reads or builds for these arguments: (tag, key, path)."""
    key = cache_key(files, size, channels, scaling)
    tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in desc)
    tag += f"-{size}px" + (f"-{channels}ch" if channels != 3 else "")
    return tag, key, Path(cache_dir) / f"{tag}-{key}.npy"


def is_cached(files, size, cache_dir, desc="images", channels=3, scaling=None):
    """True when `load_images` with these arguments reads an existing cache (decodes nothing)."""
    try:
        return cache_path(files, size, cache_dir, desc, channels, scaling)[2].is_file()
    except (OSError, TypeError):  # a missing file (None, or gone since): not cached
        return False


def load_images(files, size, cache_dir, desc="images", workers=None, channels=3, scaling=None):
    """Decoded uint8 images (N, size, size, channels) for `files`, memory-mapped from the cache.

    Builds the cache file on first use or when any source file changed (size or
    mtime); removes stale caches of the same `desc` and size. Raises DataError
    listing every file that cannot be decoded, and utils.common.write_errors.WriteFault
    (an OSError) when the cache cannot be written: no room (with the megabytes needed
    and free), quota, read-only or no permission.
    """
    cache_dir = Path(cache_dir)
    tag, key, path = cache_path(files, size, cache_dir, desc, channels, scaling)
    if not path.is_file():
        # folders this call creates are removed again when decoding fails: bad data leaves nothing
        made = [d for d in (cache_dir, *cache_dir.parents) if not d.exists()]
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_fault(e, cache_dir, "pass --cache-dir with a writable folder") or e
        sweep(cache_dir)  # temp files of builds that were killed
        log.info("decoding %d images at %dpx into %s", len(files), size, path)
        try:
            _build(files, size, path, workers or default_workers(), desc, channels, scaling)
        except BaseException:
            for d in made:
                try:
                    d.rmdir()
                except OSError:
                    break
            raise
        # stale caches of this band count, once the new one exists
        for old in cache_dir.glob(f"{tag}-{'?' * len(key)}.npy"):
            if old != path:
                old.unlink(missing_ok=True)
    arr = np.load(path, mmap_mode="r")
    if arr.shape != (len(files), size, size, channels):
        raise DataError(f"{path}: cache has shape {arr.shape}, expected {(len(files), size, size, channels)}; "
                        f"delete it")
    return arr
