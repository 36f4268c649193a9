#!/usr/bin/env python3
"""The face_recognition reference (dlib HOG detector + ResNet embeddings) that
`deepstack-bench targets` compares deepstackd's recognize latency against.

    python3 dlib_pipeline.py --repeat 10 PHOTO...

For each photo: load_image_file (decode), face_locations (HOG, default upsample 1) and
face_encodings (ResNet, 1 jitter, small landmarks), timed together. Prints one JSON object
per photo: median milliseconds and the faces found. dlib runs on one thread here (its HOG
and ResNet code is single-threaded without CUDA). Pinned packages:
daemon/benches/requirements-dlib.txt.
"""
import argparse
import json
import os
import statistics
import time
import warnings

warnings.filterwarnings("ignore")  # face_recognition_models imports pkg_resources

import face_recognition  # noqa: E402


def run(path, repeat):
    times, faces = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        img = face_recognition.load_image_file(path)
        boxes = face_recognition.face_locations(img)  # model="hog", number_of_times_to_upsample=1
        encodings = face_recognition.face_encodings(img, boxes)
        times.append((time.perf_counter() - t0) * 1000)
        faces = len(encodings)
    return {"photo": os.path.basename(path), "faces": faces,
            "width": int(img.shape[1]), "height": int(img.shape[0]),
            "ms": {"total": statistics.median(times)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("photos", nargs="+")
    args = ap.parse_args()
    for p in args.photos:
        run(p, 1)  # warm-up
        print(json.dumps(run(p, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
