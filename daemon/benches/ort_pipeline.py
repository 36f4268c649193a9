#!/usr/bin/env python3
"""The references that `deepstack-bench` measures deepstackd against, stage by stage, on the
same weights in their strongest form for a Python user: FP32 ONNX files folded from our int8
ones by fp32_models.py (built once into target/bench-fp32/), one thread each.

    python3 ort_pipeline.py --size 640 --repeat 10 [--references onnxruntime,opencv] PHOTO...

Two references, in this order, in the same process:
  onnxruntime  deepstackd's pipeline on onnxruntime (CPU, intra_op 1, inter_op 1, sequential,
               ORT_ENABLE_ALL): OpenCV decodes, letterboxes and warps (cv2.setNumThreads(1)),
               YuNet's heads are decoded in numpy, NMS is cv2.dnn.NMSBoxes, the faces embed as
               one batch.
  opencv       OpenCV's own face API on OpenCV's dnn (cv2.setNumThreads(1)): imdecode, a
               resize of the long side to --size, FaceDetectorYN.detect, then per face
               FaceRecognizerSF.alignCrop and .feature (one face at a time: it has no batch).

Prints one JSON object per reference and photo: "reference" (onnxruntime or opencv), "engine"
(name and version), the photo, its size, the faces found and the median milliseconds of
"decode", "detect" (resize included), "align", "embed" (all faces), "embed_per_face" and
"total" (decode + detect + align + embed). Pinned packages: daemon/benches/requirements.txt.

    python3 ort_pipeline.py --serve --size 640 [--references onnxruntime,opencv]

Measures on request, so that `deepstack-bench targets` can alternate the reference with the
daemon and both see the same state of the machine: reads one JSON object a line on stdin,
{"reference": NAME, "path": PHOTO, "repeat": N}, runs that reference once unmeasured and N
times measured on the photo, and answers with the object above plus "totals", the N runs'
totals in ms. Ends at the end of its input.
"""
import argparse
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp32_models  # noqa: E402

TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
NMS_IOU = 0.3
STAGES = ("decode", "detect", "align", "embed")


def round32(v):
    return (v + 31) // 32 * 32


def fit(img, size):
    """The photo scaled so that its long side is at most `size`, and the scale back (x, y)."""
    h, w = img.shape[:2]
    s = min(1.0, size / max(h, w))
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR) if s < 1 else img
    return small, w / sw, h / sh


class OnnxRuntime:
    """deepstackd's pipeline, with onnxruntime running the networks."""

    name = "onnxruntime"

    def __init__(self, models, size, min_score):
        self.engine = f"onnxruntime {ort.__version__} fp32 (1 thread, ORT_ENABLE_ALL)"
        self.size, self.min_score = size, min_score
        self.yunet = self.session(models["yunet_2023mar_fp32.onnx"])
        self.sface = self.session(models["sface_2021dec_fp32.onnx"])

    @staticmethod
    def session(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def detect(self, img):
        small, fx, fy = fit(img, self.size)
        sh, sw = small.shape[:2]
        ph, pw = round32(sh), round32(sw)
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :sh, :sw] = small.transpose(2, 0, 1)
        out = self.yunet.run(None, {"input": blob})
        kps = self.decode_heads(out, pw)
        return kps * np.array([fx, fy], np.float32)

    def decode_heads(self, out, pw):
        boxes, scores, kps = [], [], []
        for k, s in enumerate((8, 16, 32)):
            cls, obj, bbox, kp = out[k][0, :, 0], out[3 + k][0, :, 0], out[6 + k][0], out[9 + k][0]
            cols = pw // s
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            idx = np.nonzero(score >= self.min_score)[0]
            r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            cx, cy = (c + bbox[idx, 0]) * s, (r + bbox[idx, 1]) * s
            bw, bh = np.exp(bbox[idx, 2]) * s, np.exp(bbox[idx, 3]) * s
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1))
            scores.append(score[idx])
            pts = kp[idx].reshape(-1, 5, 2).copy()
            pts[:, :, 0] = (pts[:, :, 0] + c[:, None]) * s
            pts[:, :, 1] = (pts[:, :, 1] + r[:, None]) * s
            kps.append(pts)
        boxes, scores, kps = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.min_score, NMS_IOU)
        return kps[np.array(keep, int).reshape(-1)]

    @staticmethod
    def align(img, faces):
        crops = []
        for pts in faces:
            m, _ = cv2.estimateAffinePartial2D(pts, TEMPLATE, method=cv2.LMEDS)
            crops.append(cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR))
        return crops

    def embed(self, crops):
        if not crops:
            return []
        batch = np.stack([c[:, :, ::-1].transpose(2, 0, 1) for c in crops]).astype(np.float32)
        return list(self.sface.run(None, {"data": batch})[0])


class OpenCv:
    """OpenCV's own FaceDetectorYN + FaceRecognizerSF."""

    name = "opencv"

    def __init__(self, models, size, min_score):
        self.engine = f"OpenCV {cv2.__version__} FaceDetectorYN + FaceRecognizerSF fp32 (1 thread)"
        self.size = size
        self.detector = cv2.FaceDetectorYN.create(
            models["yunet_2023mar_fp32.onnx"], "", (size, size), min_score, NMS_IOU, 5000)
        self.recognizer = cv2.FaceRecognizerSF.create(models["sface_2021dec_fp32.onnx"], "")

    def detect(self, img):
        small, fx, fy = fit(img, self.size)
        self.detector.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.detector.detect(small)
        if faces is None:
            return np.zeros((0, 15), np.float32)
        faces = faces.copy()
        faces[:, 0:14:2] *= fx
        faces[:, 1:14:2] *= fy
        return faces

    def align(self, img, faces):
        return [self.recognizer.alignCrop(img, f) for f in faces]

    def embed(self, crops):
        return [self.recognizer.feature(c) for c in crops]


def run(ref, data, repeat):
    times = {k: [] for k in STAGES}
    for _ in range(repeat):
        t0 = time.perf_counter()
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        t1 = time.perf_counter()
        faces = ref.detect(img)
        t2 = time.perf_counter()
        crops = ref.align(img, faces)
        t3 = time.perf_counter()
        ref.embed(crops)
        t4 = time.perf_counter()
        for k, v in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[k].append(v * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["total"] = sum(med[k] for k in STAGES)
    med["embed_per_face"] = med["embed"] / max(1, len(faces))
    totals = [sum(run) for run in zip(*(times[k] for k in STAGES))]
    return img, len(faces), med, totals


def report(ref, path, size, img, faces, med, **extra):
    print(json.dumps({"reference": ref.name, "engine": ref.engine, "path": path,
                      "photo": os.path.basename(path), "size": size,
                      "faces": faces, "width": int(img.shape[1]),
                      "height": int(img.shape[0]), "ms": med, **extra}), flush=True)


def serve(refs, size):
    """Measure what each line of stdin asks for (see the module's doc)."""
    photos = {}
    for line in sys.stdin:
        ask = json.loads(line)
        ref, path = refs[ask["reference"]], ask["path"]
        if path not in photos:
            photos[path] = np.fromfile(path, np.uint8)
        data = photos[path]
        run(ref, data, 1)  # warm-up
        img, faces, med, totals = run(ref, data, int(ask["repeat"]))
        report(ref, path, size, img, faces, med, totals=totals)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=640, help="detector long side (the speed mode)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--min-score", type=float, default=0.5, help="YuNet score threshold")
    ap.add_argument("--references", default="onnxruntime,opencv",
                    help="comma-separated, in order: onnxruntime, opencv")
    ap.add_argument("--models", default=fp32_models.DEFAULT_OUT,
                    help="where the fp32 files are built (default: %(default)s)")
    ap.add_argument("--serve", action="store_true",
                    help="measure what stdin asks for, a JSON line at a time (see above)")
    ap.add_argument("photos", nargs="*")
    args = ap.parse_args()
    if not args.serve and not args.photos:
        ap.error("photos are needed, unless --serve")
    cv2.setNumThreads(1)
    models = fp32_models.ensure(args.models)
    kinds = {c.name: c for c in (OnnxRuntime, OpenCv)}
    refs = {}
    for name in args.references.split(","):
        if name not in kinds:
            ap.error(f"unknown reference {name}; known: {', '.join(kinds)}")
        refs[name] = kinds[name](models, args.size, args.min_score)
    if args.serve:
        print(json.dumps({"ready": list(refs)}), flush=True)
        serve(refs, args.size)
        return
    for ref in refs.values():
        for path in args.photos:
            data = np.fromfile(path, np.uint8)
            run(ref, data, 2)  # warm-up
            img, faces, med, _ = run(ref, data, args.repeat)
            report(ref, path, args.size, img, faces, med)


if __name__ == "__main__":
    main()
