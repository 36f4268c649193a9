#!/usr/bin/env python3
"""FP32 copies of the shipped int8 models, for the references of `deepstack-bench`.

    python3 fp32_models.py [--out target/bench-fp32]

models-int8/*.onnx hold weight-only int8: every Conv/Gemm weight is an int8 initializer
behind a constant DequantizeLinear(axis=0) (see models-int8/build.py). tract folds that to
fp32 once at load, but onnxruntime and OpenCV's dnn dequantize at every run, which is not
how a Python user would run these networks. This script folds every DequantizeLinear whose
inputs are all initializers into one float32 initializer, (q - zero_point) * scale, under the
node's output name, and drops the int8 tensors: the same weights, the same graph otherwise
(inputs, outputs, opset 13, IR 7), checked with onnx.checker.

The output is a pure function of the int8 files, this script and the pinned numpy/onnx of
daemon/benches/requirements.txt: OUT/SHA256SUMS lists the files made and OUT/.stamp what they
were made from; a run whose stamp matches is a no-op, any other rebuilds. OUT appears
atomically (built in a temporary sibling, then renamed), so concurrent runs are safe.
OUT lives under target/ and is never committed.
"""
import argparse
import hashlib
import os
import shutil
import sys
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
INT8 = os.path.join(ROOT, "models-int8")
DEFAULT_OUT = os.path.join(ROOT, "target", "bench-fp32")
# fp32 output name: int8 source in models-int8/.
MODELS = {
    "yunet_2023mar_fp32.onnx": "yunet_2023mar_int8.onnx",
    "sface_2021dec_fp32.onnx": "sface_2021dec_int8.onnx",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def dequantize(q, scale, zero, axis):
    """ONNX DequantizeLinear (opset 13): per tensor, or per `axis` with 1-D scale/zero_point."""
    q = q.astype(np.float32)
    zero = np.zeros_like(scale, np.float32) if zero is None else zero.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 1 and q.ndim > 0:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def fold(data: bytes) -> bytes:
    """The model with every constant DequantizeLinear folded into an f32 initializer."""
    model = onnx.load_from_string(data)
    g = model.graph
    consts = {i.name: i for i in g.initializer}
    kept, folded = [], {}
    for n in g.node:
        inputs = [i for i in n.input if i]
        if n.op_type == "DequantizeLinear" and all(i in consts for i in inputs):
            arrays = [numpy_helper.to_array(consts[i]) for i in inputs]
            q, scale = arrays[0], arrays[1]
            zero = arrays[2] if len(arrays) > 2 else None
            if attr(n, "block_size", 0):
                raise ValueError(f"{n.name}: blocked DequantizeLinear is not expected here")
            folded[n.output[0]] = dequantize(q, scale, zero, attr(n, "axis", 1))
        else:
            kept.append(n)
    if any(n.op_type == "DequantizeLinear" for n in kept):
        raise ValueError("a DequantizeLinear with a non-constant input is left")
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    inits = [i for i in g.initializer if i.name in used]
    inits += [numpy_helper.from_array(folded[k], k) for k in sorted(folded) if k in used]
    del g.node[:]
    g.node.extend(kept)
    del g.initializer[:]
    g.initializer.extend(inits)
    model.producer_name = "deepstack-rs daemon/benches/fp32_models.py"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def stamp_text():
    """What OUT is made from: this script, the int8 files and the converter's versions."""
    lines = [f"fp32_models.py {sha256(open(__file__, 'rb').read())}",
             f"numpy {np.__version__}", f"onnx {onnx.__version__}"]
    for out, src in MODELS.items():
        with open(os.path.join(INT8, src), "rb") as f:
            lines.append(f"{src} {sha256(f.read())} -> {out}")
    return "\n".join(lines) + "\n"


def ensure(out=DEFAULT_OUT):
    """Builds OUT unless its stamp is current; returns {fp32 name: path}."""
    out = os.path.abspath(out)
    paths = {name: os.path.join(out, name) for name in MODELS}
    stamp = stamp_text()
    try:
        with open(os.path.join(out, ".stamp")) as f:
            if f.read() == stamp and all(os.path.exists(p) for p in paths.values()):
                return paths
    except OSError:
        pass
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-tmp-", dir=parent)
    try:
        sums = []
        for name, src in MODELS.items():
            with open(os.path.join(INT8, src), "rb") as f:
                data = fold(f.read())
            with open(os.path.join(work, name), "wb") as f:
                f.write(data)
            sums.append(f"{sha256(data)}  {name}\n")
            print(f"fp32_models.py: {src} -> {os.path.join(out, name)} ({len(data)} bytes)",
                  file=sys.stderr)
        with open(os.path.join(work, "SHA256SUMS"), "w") as f:
            f.writelines(sums)
        with open(os.path.join(work, ".stamp"), "w") as f:
            f.write(stamp)
        os.chmod(work, 0o755)
        if os.path.exists(out):
            aside = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-stale-", dir=parent)
            try:
                os.rename(out, os.path.join(aside, "old"))
            except FileNotFoundError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(work, out)
        except OSError:
            pass  # another process published the same files meanwhile
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    args = ap.parse_args()
    for name, path in ensure(args.out).items():
        print(path)


if __name__ == "__main__":
    main()
