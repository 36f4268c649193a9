#!/usr/bin/env python3
"""OpenCV reference for face alignment: the crop our Rust alignment must reproduce.

Usage: python3 opencv_align.py IMAGE OUT.png x0 y0 x1 y1 x2 y2 x3 y3 x4 y4

The five landmarks are in IMAGE's pixels, in the order of the ArcFace template: right eye
(on the image's left), left eye, nose, right mouth corner, left mouth corner. Writes the
112x112 crop to OUT.png and prints the 2x3 similarity matrix as JSON on stdout.

OpenCV comes from the pinned testdata-pylib that setup.py installs: $DEEPSTACK_TEST_PYLIB,
else `testdata-pylib` next to the workspace's target/testdata.
"""

import json
import os
import sys
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parents[3]
DEFAULT_PYLIB = WORKSPACE / "target" / "testdata-pylib"

# InsightFace's ArcFace template for a 112x112 crop (arcface_dst in insightface.utils.face_align).
ARCFACE_112 = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
]
CROP_SIZE = (112, 112)


def use_pinned_pylib():
    pylib = Path(os.environ.get("DEEPSTACK_TEST_PYLIB") or DEFAULT_PYLIB)
    if pylib.is_dir():
        sys.path.insert(0, str(pylib))


def parse_args(argv):
    if len(argv) != 13:
        sys.exit(f"usage: {argv[0]} IMAGE OUT.png x0 y0 x1 y1 x2 y2 x3 y3 x4 y4")
    coords = [float(v) for v in argv[3:]]
    landmarks = [coords[i : i + 2] for i in range(0, 10, 2)]
    return argv[1], argv[2], landmarks


def align(img, landmarks):
    import cv2
    import numpy as np

    src = np.array(landmarks, dtype=np.float32)
    dst = np.array(ARCFACE_112, dtype=np.float32)
    # A least-squares fit over all five landmarks (what deepstackd computes, and what
    # OpenCV's own FaceRecognizerSF.alignCrop does): RANSAC with a threshold no landmark can
    # exceed keeps every point as an inlier, and the Levenberg-Marquardt refinement then
    # minimises the squared error over all of them. With the default 3 px threshold (or
    # LMEDS) OpenCV keeps only the landmarks nearest the template - often 3 of 5 on real
    # faces - and the crop rotates by a few degrees: a different, not a better, alignment.
    matrix, _ = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=1000.0, refineIters=100
    )
    if matrix is None:
        sys.exit("opencv_align.py: estimateAffinePartial2D found no transform")
    crop = cv2.warpAffine(
        img, matrix, CROP_SIZE,
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return crop, matrix


def main(argv):
    image_path, out_path, landmarks = parse_args(argv)
    use_pinned_pylib()
    try:
        import cv2
    except ImportError as e:
        sys.exit(f"opencv_align.py: cannot import cv2 ({e}); run daemon/tests/data/setup.py first")

    # cv2.imread applies the EXIF orientation; the callers pass upright photos only.
    img = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"opencv_align.py: cannot read {image_path}")
    crop, matrix = align(img, landmarks)
    if not cv2.imwrite(out_path, crop):
        sys.exit(f"opencv_align.py: cannot write {out_path}")
    print(json.dumps(matrix.tolist()))


if __name__ == "__main__":
    main(sys.argv)
