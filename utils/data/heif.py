"""HEIC/HEIF images (an iPhone's photos) read through pillow-heif, like any other image.

Importing this module registers pillow-heif's opener with PIL (utils/data/bands.py imports it,
so every reader of images has it: the data checks, the cache's decoders, predict.py). Without
the package a .heic file is named with the command that installs it, not called unreadable.
"""
HEIF_EXTS = (".heic", ".heif")


def register():
    """Register pillow-heif's HEIF opener with PIL; True when the package is there."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


AVAILABLE = register()


def heif_problem(path):
    """Why a .heic/.heif file cannot be read here (pillow-heif missing), or None."""
    if AVAILABLE or not str(path).lower().endswith(HEIF_EXTS):
        return None
    return (f"{path}: a HEIC/HEIF photo, read through the package pillow-heif, which is not installed: "
            f"pip install pillow-heif (or convert the photo to JPEG)")
