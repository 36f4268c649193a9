#!/usr/bin/env python3
"""The same pipeline as deepstackd's, on onnxruntime (1 thread) and OpenCV: the reference
that `deepstack-bench` measures tract against, stage by stage, on the same ONNX files.

    python3 ort_pipeline.py --size 640 --repeat 10 PHOTO...

Prints one JSON object per photo: median milliseconds per stage and the faces found.
Pinned packages: daemon/benches/requirements.txt.
"""
import argparse
import json
import os
import statistics
import time

import cv2
import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "..", "models-int8")
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def session(name):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(os.path.join(MODELS, name), opts, providers=["CPUExecutionProvider"])


def round32(v):
    return (v + 31) // 32 * 32


def letterbox(img, size):
    h, w = img.shape[:2]
    s = min(1.0, size / max(h, w))
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR) if s < 1 else img
    pw, ph = round32(sw), round32(sh)
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :sh, :sw] = small.transpose(2, 0, 1)
    return blob, w / sw, h / sh


def decode_heads(out, pw, ph, min_score=0.5):
    boxes, scores, kps = [], [], []
    for k, s in enumerate((8, 16, 32)):
        cls, obj, bbox, kp = out[k][0, :, 0], out[3 + k][0, :, 0], out[6 + k][0], out[9 + k][0]
        cols = pw // s
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        idx = np.nonzero(score >= min_score)[0]
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
    keep = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), min_score, 0.3)
    keep = np.array(keep, int).reshape(-1)
    return boxes[keep], scores[keep], kps[keep]


def run(path, size, repeat, yunet, sface):
    times = {"decode": [], "detect": [], "align": [], "embed": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        t1 = time.perf_counter()
        blob, fx, fy = letterbox(img, size)
        out = yunet.run(None, {"input": blob})
        boxes, scores, kps = decode_heads(out, blob.shape[3], blob.shape[2])
        kps = kps * np.array([fx, fy], np.float32)
        t2 = time.perf_counter()
        crops = []
        for pts in kps:
            m, _ = cv2.estimateAffinePartial2D(pts, TEMPLATE, method=cv2.LMEDS)
            crops.append(cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR))
        t3 = time.perf_counter()
        if crops:
            batch = np.stack([c[:, :, ::-1].transpose(2, 0, 1) for c in crops]).astype(np.float32)
            sface.run(None, {"data": batch})
        t4 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[k].append(v * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["total"] = sum(med.values())
    return {"photo": os.path.basename(path), "size": size, "faces": len(kps),
            "width": int(img.shape[1]), "height": int(img.shape[0]), "ms": med}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=640, help="detector long side (the speed mode)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("photos", nargs="+")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    yunet, sface = session("yunet_2023mar_int8.onnx"), session("sface_2021dec_int8.onnx")
    for p in args.photos:
        run(p, args.size, 2, yunet, sface)  # warm-up
        print(json.dumps(run(p, args.size, args.repeat, yunet, sface)), flush=True)


if __name__ == "__main__":
    main()
