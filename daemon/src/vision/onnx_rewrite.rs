//! Rewrites of the ONNX graph before tract sees it, each measured on SFace with
//! `deepstack-bench` (x86, tract 0.23.9); the shipped files stay standard ONNX.
//!
//! 1. Weight-only int8 -> f32 once, at load. The shipped files keep weights as int8 behind
//!    `DequantizeLinear` (a quarter of the size, see models-int8/PROVENANCE.md). Left to
//!    tract, SFace's 6.4M-weight final layer stays int8 and is cast on every run: 64 ms a
//!    face against 45 ms, and 550 ms against 120 ms to build the plan. Every
//!    `DequantizeLinear` whose inputs are all constants (int8 values, f32 scales, int8 zero
//!    points, per tensor or per axis) becomes the f32 initializer it would compute.
//! 2. `PRelu(x, s)` -> `Max(x, s * x)` where every slope is at most 1, else
//!    `Relu(x) + s * Min(x, 0)`. tract expands PRelu into a comparison and a generic
//!    three-way select that run element by element; plain ops take its fast element-wise
//!    kernels: SFace 47 -> 27 ms a face with the four-op form. The two-op form (25 of SFace's
//!    27 PRelu; two early layers have a few slopes just above 1) makes two passes over each
//!    activation instead of four: about 9 ms less CPU per 4-face recognize (four alternated
//!    pairs of runs, 144-154 instead of 153-164 ms). Both give PRelu's output bit for bit:
//!    for x < 0 the product s * x is the larger when s <= 1, and for x >= 0 x is.
//!
//! 3. On request ([`load_with_int8_head`]), SFace's final int8 Gemm is split off and run by
//!    `linear_head` with its weights kept int8.
//! 4. With [`Kernels::Ours`], the nodes `conv_kernels` computes exactly run as `conv_ops`:
//!    YuNet's layers in chains, SFace's depthwise layers with the PReLUs around them (before
//!    rewrite 2, which then only meets the PReLUs left to tract).
//!
//! 5. YuNet's twelve outputs as planes ([`planar_outputs`]): each head's activation
//!    `[1, C, H, W]` is its output as it is, not moved channels-last and flattened to
//!    `[1, H*W, C]` first by a `Transpose` and a `Reshape` (`detect::decode_heads` reads the
//!    planes). Those copies and their twelve nodes (6300 pixels of 16 channels at
//!    640x480) cost 0.1-0.2 ms of a one-thread request (BENCHMARKS.md).
//!
//! Anything else is left for tract to handle as usual.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

use super::conv_ops;
use super::linear_head::{floats, Int8Linear};

/// Who runs the convolutions `conv_kernels` can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// tract, as it would without us (the reference of the tests and of the bench).
    TractOnly,
    /// Our ops (`conv_ops`), as the daemon runs the models.
    Ours,
}

/// Parse ONNX bytes into a tract model, with the rewrites applied.
pub fn load(onnx: &[u8], kernels: Kernels) -> TractResult<InferenceModel> {
    Ok(load_parts(onnx, false, kernels)?.0)
}

/// Like [`load`], but a final int8 linear layer is split off and returned, to run outside
/// tract (see `linear_head`); the model then outputs that layer's input.
pub fn load_with_int8_head(
    onnx: &[u8],
    kernels: Kernels,
) -> TractResult<(InferenceModel, Option<Int8Linear>)> {
    load_parts(onnx, true, kernels)
}

fn load_parts(
    onnx: &[u8],
    split_head: bool,
    kernels: Kernels,
) -> TractResult<(InferenceModel, Option<Int8Linear>)> {
    let mut framework = tract_onnx::onnx();
    let mut proto = framework.proto_model_for_read(&mut Cursor::new(onnx))?;
    let head = if split_head {
        Int8Linear::split_off(&mut proto)
    } else {
        None
    };
    dequantize_constants(&mut proto);
    if kernels == Kernels::Ours {
        conv_ops::rewrite(&mut proto);
        conv_ops::register(&mut framework.op_register);
    }
    expand_prelu(&mut proto);
    planar_outputs(&mut proto);
    Ok((framework.model_for_proto_model(&proto)?, head))
}

/// Every graph output made as `Reshape(Transpose(x, perm [0, 2, 3, 1]))`, or `Sigmoid` of
/// that, becomes `x` (or `Sigmoid(x)`): the activation's planes instead of its pixels'
/// channels in a row. Only where the `Transpose` and the `Reshape` have no other reader.
/// Returns how many outputs changed.
pub fn planar_outputs(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let readers = conv_ops::readers(graph);
    // Each value's node and its kind; nodes are only dropped at the end, so the indices hold.
    let producer: HashMap<String, (usize, String)> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.output
                .iter()
                .map(move |o| (o.clone(), (i, n.op_type.clone())))
        })
        .collect();
    let made_by = |name: &str, op: &str| match producer.get(name) {
        Some((i, kind)) if kind == op => Some(*i),
        _ => None,
    };
    let mut drop = HashSet::new();
    for k in 0..graph.output.len() {
        let name = graph.output[k].name.clone();
        let sigmoid = made_by(&name, "Sigmoid");
        let flattened = sigmoid.map_or(name.clone(), |s| graph.node[s].input[0].clone());
        let Some(reshape) = made_by(&flattened, "Reshape") else {
            continue;
        };
        let Some(transpose) = made_by(&graph.node[reshape].input[0], "Transpose") else {
            continue;
        };
        let tr = &graph.node[transpose];
        let channels_last = tr
            .attribute
            .iter()
            .any(|a| a.name == "perm" && a.ints == [0, 2, 3, 1]);
        let planes = tr.input[0].clone();
        if !channels_last || readers[&tr.output[0]] != 1 || readers[&flattened] != 1 {
            continue;
        }
        match (sigmoid, producer.get(&planes)) {
            (Some(s), _) => graph.node[s].input[0] = planes,
            // The output keeps its name: the node making the planes now writes it, as its
            // only reader was the Transpose.
            (None, Some(&(p, _))) if readers[&planes] == 1 => {
                for o in &mut graph.node[p].output {
                    if *o == planes {
                        o.clone_from(&name);
                    }
                }
            }
            _ => continue,
        }
        drop.extend([reshape, transpose]);
        if let Some(Value::TensorType(t)) = graph.output[k]
            .r#type
            .as_mut()
            .and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
    }
    conv_ops::remove_nodes(graph, &drop);
    drop.len() / 2
}

/// Replace every `PRelu(x, s) -> y` by `Max(x, s * x)` when the slopes `s` are constants of
/// at most 1, else by `Relu(x) + s * Min(x, 0)`.
fn expand_prelu(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    if !graph.node.iter().any(|n| n.op_type == "PRelu") {
        return;
    }
    const ZERO: &str = "deepstackd.prelu.zero";
    let mut zero_used = false;
    let node = |op: &str, inputs: [&str; 2], output: String| NodeProto {
        op_type: op.into(),
        name: output.clone(),
        input: inputs
            .iter()
            .filter(|i| !i.is_empty())
            .map(|i| i.to_string())
            .collect(),
        output: vec![output],
        ..Default::default()
    };
    let mut nodes = Vec::with_capacity(graph.node.len() * 2);
    for n in std::mem::take(&mut graph.node) {
        if n.op_type != "PRelu" || n.input.len() != 2 || n.output.len() != 1 {
            nodes.push(n);
            continue;
        }
        let (x, slope, y) = (&n.input[0], &n.input[1], &n.output[0]);
        let at_most_one = graph
            .initializer
            .iter()
            .find(|t| &t.name == slope)
            .and_then(floats)
            .is_some_and(|v| !v.is_empty() && v.iter().all(|&s| s <= 1.0));
        if at_most_one {
            let scaled = format!("{y}.scaled");
            nodes.push(node("Mul", [x, slope], scaled.clone()));
            nodes.push(node("Max", [x, &scaled], y.clone()));
            continue;
        }
        let (pos, neg, scaled) = (
            format!("{y}.pos"),
            format!("{y}.neg"),
            format!("{y}.scaled"),
        );
        zero_used = true;
        nodes.push(node("Relu", [x, ""], pos.clone()));
        nodes.push(node("Min", [x, ZERO], neg.clone()));
        nodes.push(node("Mul", [&neg, slope], scaled.clone()));
        nodes.push(node("Add", [&pos, &scaled], y.clone()));
    }
    graph.node = nodes;
    if zero_used {
        graph.initializer.push(TensorProto {
            name: ZERO.into(),
            data_type: DataType::Float as i32,
            raw_data: 0f32.to_le_bytes().to_vec(),
            ..Default::default()
        });
    }
}

fn dequantize_constants(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let index: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let mut folded = Vec::new();
    graph.node.retain(|node| {
        if node.op_type != "DequantizeLinear" || node.input.len() != 3 {
            return true;
        }
        let get = |i: usize| index.get(&node.input[i]).map(|&k| &graph.initializer[k]);
        let axis = node
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(1, |a| a.i);
        let blocked = node
            .attribute
            .iter()
            .any(|a| a.name == "block_size" && a.i != 0);
        match (get(0), get(1), get(2)) {
            (Some(q), Some(scale), Some(zero)) if !blocked => {
                match dequantize(q, scale, zero, axis, &node.output[0]) {
                    Some(t) => {
                        folded.push(t);
                        false
                    }
                    None => true,
                }
            }
            _ => true,
        }
    });
    graph.initializer.extend(folded);
    // Drop the int8 tensors nothing reads any more.
    let used: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    let keep: Vec<bool> = graph
        .initializer
        .iter()
        .map(|t| used.contains(t.name.as_str()))
        .collect();
    let mut keep = keep.into_iter();
    graph.initializer.retain(|_| keep.next().unwrap_or(true));
}

/// `(q - zero) * scale`, per tensor or along `axis`; `None` if the tensors are not the
/// raw-data int8/f32 layout our build script writes.
fn dequantize(
    q: &TensorProto,
    scale: &TensorProto,
    zero: &TensorProto,
    axis: i64,
    name: &str,
) -> Option<TensorProto> {
    let int8 = DataType::Int8 as i32;
    let float = DataType::Float as i32;
    if q.data_type != int8 || zero.data_type != int8 || scale.data_type != float {
        return None;
    }
    let values: Vec<i8> = q.raw_data.iter().map(|&b| b as i8).collect();
    let zeros: Vec<i8> = zero.raw_data.iter().map(|&b| b as i8).collect();
    let scales = floats(scale)?;
    let dims: Vec<usize> = q
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let count: usize = dims.iter().product();
    if values.len() != count || scales.is_empty() || scales.len() != zeros.len() {
        return None;
    }
    // Elements per step along the axis, and the axis length.
    let (inner, channels) = if scales.len() == 1 {
        (count, 1)
    } else {
        let axis = usize::try_from(if axis < 0 {
            axis + dims.len() as i64
        } else {
            axis
        })
        .ok()?;
        if axis >= dims.len() || dims[axis] != scales.len() {
            return None;
        }
        (dims[axis + 1..].iter().product::<usize>(), dims[axis])
    };
    let mut raw = Vec::with_capacity(count * 4);
    for (i, &v) in values.iter().enumerate() {
        let c = (i / inner) % channels;
        let f = (f32::from(v) - f32::from(zeros[c])) * scales[c];
        raw.extend_from_slice(&f.to_le_bytes());
    }
    Some(TensorProto {
        name: name.to_string(),
        dims: q.dims.clone(),
        data_type: float,
        raw_data: raw,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slopes(name: &str, values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            data_type: DataType::Float as i32,
            dims: vec![values.len() as i64, 1, 1],
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn prelu(x: &str, slope: &str, y: &str) -> NodeProto {
        NodeProto {
            op_type: "PRelu".into(),
            input: vec![x.into(), slope.into()],
            output: vec![y.into()],
            ..Default::default()
        }
    }

    fn ops(proto: &ModelProto) -> Vec<&str> {
        let graph = proto.graph.as_ref().unwrap();
        graph.node.iter().map(|n| n.op_type.as_str()).collect()
    }

    fn count(proto: &ModelProto, op: &str) -> usize {
        ops(proto).iter().filter(|&&o| o == op).count()
    }

    fn parsed(onnx: &[u8]) -> ModelProto {
        tract_onnx::onnx()
            .proto_model_for_read(&mut Cursor::new(onnx))
            .unwrap()
    }

    #[test]
    fn prelu_takes_two_ops_when_every_slope_is_at_most_one() {
        let mut proto = ModelProto {
            graph: Some(tract_onnx::pb::GraphProto {
                node: vec![prelu("x", "s1", "y"), prelu("y", "s2", "z")],
                initializer: vec![slopes("s1", &[0.25, 1.0, -0.5]), slopes("s2", &[0.1, 1.5])],
                ..Default::default()
            }),
            ..Default::default()
        };
        expand_prelu(&mut proto);
        // A slope above 1 would make Max pick x for negative x: the general form is kept.
        assert_eq!(ops(&proto), ["Mul", "Max", "Relu", "Min", "Mul", "Add"]);
        let graph = proto.graph.as_ref().unwrap();
        assert_eq!(graph.node[0].input, ["x", "s1"]);
        assert_eq!(graph.node[1].input, ["x", "y.scaled"]);
        assert_eq!(graph.node[1].output, ["y"]);
        assert!(graph
            .initializer
            .iter()
            .any(|t| t.name == "deepstackd.prelu.zero"));
    }

    #[test]
    fn yunet_outputs_its_heads_as_planes() {
        let mut proto = parsed(&super::super::ModelFiles::embedded().detector.bytes);
        let (transposes, reshapes) = (count(&proto, "Transpose"), count(&proto, "Reshape"));
        assert_eq!(planar_outputs(&mut proto), 12);
        assert_eq!(count(&proto, "Transpose"), transposes - 12);
        assert_eq!(count(&proto, "Reshape"), reshapes - 12);
        let graph = proto.graph.as_ref().unwrap();
        // Each output is made by a node (a Conv, or the Sigmoid of one for the scores and
        // objectness), under its own name.
        for output in &graph.output {
            let maker = graph.node.iter().find(|n| n.output.contains(&output.name));
            let kind = maker.map(|n| n.op_type.as_str());
            assert!(
                matches!(kind, Some("Conv" | "Sigmoid")),
                "{}: {kind:?}",
                output.name
            );
        }
        assert_eq!(planar_outputs(&mut proto), 0, "nothing left to change");
    }

    #[test]
    fn sface_prelus_take_the_two_op_form_where_the_slopes_allow() {
        let mut proto = parsed(&super::super::ModelFiles::embedded().recognizer.bytes);
        dequantize_constants(&mut proto);
        let prelus = count(&proto, "PRelu");
        assert!(prelus > 10, "{prelus} PRelu in SFace");
        let maxes = count(&proto, "Max");
        expand_prelu(&mut proto);
        assert_eq!(count(&proto, "PRelu"), 0);
        let two_op = count(&proto, "Max") - maxes;
        // Two early layers have a few slopes just above 1 and keep the four-op form.
        assert_eq!(
            two_op,
            prelus - 2,
            "{two_op} of {prelus} PRelu as Max(x, s * x)"
        );
        assert_eq!(count(&proto, "Min"), 2);
    }
}
