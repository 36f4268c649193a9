//! `conv_kernels` as tract ops: which ONNX nodes they replace, and how tract runs them.
//!
//! Before tract parses the graph, [`rewrite`] renames the nodes the kernels handle exactly
//! (after `onnx_rewrite` has turned the weights into f32 constants):
//! - first, a depthwise `Conv` 3x3, stride 1 or 2, padding 1, next to a `PRelu` (SFace's
//!   layers) -> `DeepstackdDepthwisePRelu`, which takes in the `PRelu` before it and the one
//!   after it (see [`fuse_depthwise_prelu`]); any other `PRelu` with a slope per channel
//!   (SFace's last) -> `DeepstackdPRelu`;
//! - then YuNet's heads: the four 1x1 + depthwise pairs that read one activation become one
//!   pair of all their channels and a `Split` (see [`merge_sibling_heads`]);
//! - then, for chains:
//!   - `Conv` 3x3, stride 1, padding 1, one group per channel -> `DeepstackdDepthwise3x3`;
//!   - `Conv` 1x1, stride 1, no padding, one group -> `DeepstackdPointwise`;
//!   - `Conv` 3x3, stride 2, padding 1, one group (YuNet's first layer) -> `DeepstackdStem`;
//!   - either of those followed by its only consumer `Relu` -> the same with `relu=1`, and
//!     the `Relu` goes;
//!   - `MaxPool` 2x2, stride 2, no padding, `ceil_mode=0` -> `DeepstackdMaxPool2x2`;
//!   - a run of those nodes, each the only reader of the one before, with at least one
//!     convolution among them and two nodes or a stem -> one `DeepstackdChain` that computes
//!     them row by row (`conv_chain`), its inputs the run's input and every layer's weights
//!     in order. A node left out of every run goes back to what it was, for tract: on a
//!     whole plane tract's matrix products beat our pointwise kernel (2.4x on SFace's
//!     layers of 64 to 1024 channels);
//!   - a chain whose input is an `Add` of an activation and a coarser one upsampled 2x by
//!     nearest neighbour (`Resize`), each its only reader -> the chain with the attribute
//!     `upsampled_sum=1` and the coarse activation as its last input: it sums the rows as
//!     it reads them ([`UpsampledSum`]; see [`fuse_upsampled_sums`]).
//!
//! [`register`] teaches tract's ONNX parser the names of the ops that remain; at typing,
//! each becomes one [`KernelOp`] holding its weights, with the activation as its only input
//! (an upsampled-sum chain: the two activations).
//! Any other node (SFace's stem and pointwise layers, for instance) is left to tract.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto,
    NodeProto, TensorProto,
};
use tract_onnx::tract_hir::internal::*;

use super::conv_chain::{Chain, Dims, RowSource, Stage, Stem, UpsampledSum};
use super::conv_kernels::{prelu_planes, Depthwise3x3, DepthwisePRelu, Pointwise};
use super::linear_head::floats;

const DEPTHWISE: &str = "DeepstackdDepthwise3x3";
const POINTWISE: &str = "DeepstackdPointwise";
const MAX_POOL: &str = "DeepstackdMaxPool2x2";
const CHAIN: &str = "DeepstackdChain";
const STEM: &str = "DeepstackdStem";
const DEPTHWISE_PRELU: &str = "DeepstackdDepthwisePRelu";
const PRELU: &str = "DeepstackdPRelu";

/// Adds the kernels' node types to tract's ONNX parser.
pub fn register(ops: &mut OnnxOpRegister) {
    ops.insert(DEPTHWISE_PRELU, |_, node| {
        let stride: i64 = node.get_attr("stride")?;
        ensure!(
            stride == 1 || stride == 2,
            "{DEPTHWISE_PRELU}: stride {stride}"
        );
        let flag = |name| Ok::<_, TractError>(node.get_attr_opt::<i64>(name)?.unwrap_or(0) != 0);
        let op = KernelNode::DepthwisePRelu {
            stride: stride as usize,
            input_prelu: flag("input_prelu")?,
            output_prelu: flag("output_prelu")?,
        };
        Ok((expand(op), vec![]))
    });
    ops.insert(PRELU, |_, _| Ok((expand(KernelNode::PRelu), vec![])));
    ops.insert(CHAIN, |_, node| {
        let kinds: Vec<i64> = node.get_attr_vec("kinds")?;
        let relus: Vec<i64> = node.get_attr_vec("relus")?;
        let arity: Vec<i64> = node.get_attr_vec("arity")?;
        let channels: i64 = node.get_attr("channels")?;
        let upsampled_sum = node.get_attr_opt::<i64>("upsampled_sum")?.unwrap_or(0) != 0;
        ensure!(
            kinds.len() == relus.len() && kinds.len() == arity.len() && channels > 0,
            "{CHAIN}: malformed attributes"
        );
        let stages = kinds
            .iter()
            .zip(&relus)
            .zip(&arity)
            .map(|((&kind, &relu), &arity)| {
                let kind = match kind {
                    0 => StageKind::Pointwise,
                    1 => StageKind::Depthwise,
                    2 => StageKind::MaxPool,
                    3 => StageKind::Stem,
                    other => bail!("{CHAIN}: unknown layer kind {other}"),
                };
                ensure!((0..=2).contains(&arity), "{CHAIN}: arity {arity}");
                Ok((kind, relu != 0, arity as usize))
            })
            .collect::<TractResult<Vec<_>>>()?;
        let chain = KernelNode::Chain {
            stages,
            channels: channels as usize,
            upsampled_sum,
        };
        Ok((expand(chain), vec![]))
    });
}

/// Renames the nodes the kernels run (see the module docs): first [`fuse_depthwise_prelu`],
/// then the runs that make chains. Returns how many nodes the kernels took.
pub fn rewrite(proto: &mut ModelProto) -> usize {
    let fused = fuse_depthwise_prelu(proto);
    let Some(graph) = proto.graph.as_mut() else {
        return fused;
    };
    let fused = fused + own_prelus(graph);
    merge_sibling_heads(graph);
    // What each renamed node was (the convolution, then its ReLU), by its output: a node
    // left out of every chain goes back to tract, whose matrix products beat `Pointwise`
    // on a whole plane (2.4x on SFace's).
    let mut originals: HashMap<String, Vec<NodeProto>> = HashMap::new();
    let readers = readers(graph);
    let mut renamed = 0;
    let mut fused_relus = Vec::new();
    for at in 0..graph.node.len() {
        let n = &graph.node[at];
        let kind = match n.op_type.as_str() {
            "Conv" => conv_kind(n, graph),
            "MaxPool" if is_max_pool_2x2(n) => Some(MAX_POOL),
            _ => None,
        };
        let Some(kind) = kind else { continue };
        let mut relu = None;
        if kind != MAX_POOL && readers.get(&n.output[0]) == Some(&1) {
            relu = graph.node.iter().position(|r| {
                r.op_type == "Relu" && r.input.len() == 1 && r.input[0] == n.output[0]
            });
        }
        let relu_output = relu.map(|r| graph.node[r].output[0].clone());
        let was = std::iter::once(at)
            .chain(relu)
            .map(|i| graph.node[i].clone());
        let output = relu_output.clone().unwrap_or_else(|| n.output[0].clone());
        originals.insert(output, was.collect());
        let n = &mut graph.node[at];
        n.op_type = kind.into();
        n.attribute.clear();
        if let Some(output) = relu_output {
            n.output = vec![output];
            n.attribute.push(int_attribute("relu", 1));
            fused_relus.extend(relu);
        }
        renamed += 1;
    }
    remove_nodes(graph, &fused_relus.into_iter().collect());
    merge_chains(graph);
    let nodes = std::mem::take(&mut graph.node);
    for n in nodes {
        match originals.remove(&n.output[0]) {
            Some(was) if n.op_type != CHAIN => {
                renamed -= 1;
                graph.node.extend(was);
            }
            _ => graph.node.push(n),
        }
    }
    fuse_upsampled_sums(graph);
    fused + renamed
}

/// YuNet's neck: `Add(x, Resize(y))`, the `Resize` a nearest-neighbour upsampling by 2 of
/// the height and width (`asymmetric`, `floor`: output pixel (r, c) is input pixel (r / 2,
/// c / 2)), read only by a chain. The chain then reads `x` and `y` themselves and sums
/// them row by row (its attribute `upsampled_sum`, `y` its last input): the upsampled
/// tensor and the sum (1.2 MB each at 640x480) are never made. Same additions, so the same
/// values.
fn fuse_upsampled_sums(graph: &mut GraphProto) {
    let readers = readers(graph);
    let producer = |name: &str| {
        graph
            .node
            .iter()
            .position(|n| n.output.first().map(String::as_str) == Some(name))
    };
    let only_read_once = |name: &str| readers.get(name) == Some(&1);
    let mut fused = Vec::new();
    for (at, chain) in graph.node.iter().enumerate() {
        if chain.op_type != CHAIN || !only_read_once(&chain.input[0]) {
            continue;
        }
        let Some(add) = producer(&chain.input[0]) else {
            continue;
        };
        let add_node = &graph.node[add];
        if add_node.op_type != "Add" || add_node.input.len() != 2 || !add_node.attribute.is_empty()
        {
            continue;
        }
        let upsampled = (0..2).find_map(|side| {
            let resize = producer(&add_node.input[side])?;
            (is_nearest_2x(&graph.node[resize], graph) && only_read_once(&add_node.input[side]))
                .then_some((side, resize))
        });
        let Some((side, resize)) = upsampled else {
            continue;
        };
        fused.push((at, add, resize, add_node.input[1 - side].clone()));
    }
    let mut drop = HashSet::new();
    for (at, add, resize, fine) in fused {
        let coarse = graph.node[resize].input[0].clone();
        let chain = &mut graph.node[at];
        chain.input[0] = fine;
        chain.input.push(coarse);
        chain.attribute.push(int_attribute("upsampled_sum", 1));
        drop.extend([add, resize]);
    }
    remove_nodes(graph, &drop);
}

/// Removes the nodes at the indices `drop`, keeping the others in order.
pub(super) fn remove_nodes(graph: &mut GraphProto, drop: &HashSet<usize>) {
    let mut at = 0;
    graph.node.retain(|_| {
        at += 1;
        !drop.contains(&(at - 1))
    });
}

/// A `Resize` by exactly 2 in height and width, nearest neighbour, where output pixel
/// (r, c) is input pixel (r / 2, c / 2).
fn is_nearest_2x(n: &NodeProto, graph: &GraphProto) -> bool {
    let string = |name: &str| {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.s.as_slice())
    };
    let scales = n.input.get(2).and_then(|name| {
        graph
            .initializer
            .iter()
            .find(|t| &t.name == name)
            .and_then(floats)
    });
    let roi_empty = n.input.get(1).is_none_or(|name| {
        name.is_empty()
            || graph
                .initializer
                .iter()
                .any(|t| &t.name == name && floats(t).is_some_and(|v| v.is_empty()))
    });
    n.op_type == "Resize"
        && n.output.len() == 1
        && (n.input.len() == 3 || (n.input.len() == 4 && n.input[3].is_empty()))
        && roi_empty
        && scales.as_deref() == Some(&[1.0, 1.0, 2.0, 2.0][..])
        && only_attributes(
            n,
            &[
                "mode",
                "coordinate_transformation_mode",
                "nearest_mode",
                "cubic_coeff_a",
            ],
        )
        && string("mode") == Some(b"nearest")
        && string("coordinate_transformation_mode") == Some(b"asymmetric")
        && string("nearest_mode") == Some(b"floor")
}

/// YuNet's heads: at each of its three scales, four 1x1 convolutions read one activation,
/// each followed by a 3x3 depthwise convolution of its own (scores, boxes, objectness and
/// landmarks: 1, 4, 1 and 10 channels). Left apart, each pair is a chain of its own, which
/// reads the 64 channels again and fills the pointwise kernel's blocks of eight outputs
/// with one to ten. Such siblings (two or more pairs on one activation, with constant
/// weights and biases) become one 1x1 convolution of all their outputs, one depthwise
/// convolution of all their channels and a `Split` into the pairs' outputs. The kernels
/// compute each output channel on its own, in the same order, so the results are the same
/// bit for bit.
fn merge_sibling_heads(graph: &mut GraphProto) {
    let readers = readers(graph);
    // The pairs (1x1 node, its depthwise node) reading each activation, in graph order.
    let mut groups: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
    for (p, n) in graph.node.iter().enumerate() {
        if conv_kind(n, graph) != Some(POINTWISE)
            || n.input.len() != 3
            || readers.get(&n.output[0]) != Some(&1)
        {
            continue;
        }
        let depthwise = graph.node.iter().position(|d| {
            d.input.first() == Some(&n.output[0])
                && d.input.len() == 3
                && conv_kind(d, graph) == Some(DEPTHWISE)
        });
        let Some(d) = depthwise else { continue };
        match groups.iter_mut().find(|(input, _)| *input == n.input[0]) {
            Some((_, pairs)) => pairs.push((p, d)),
            None => groups.push((n.input[0].clone(), vec![(p, d)])),
        }
    }
    let constant = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .and_then(floats)
    };
    let mut merged: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut gone: HashSet<usize> = HashSet::new();
    let mut tensors = Vec::new();
    for (input, pairs) in groups.into_iter().filter(|(_, pairs)| pairs.len() >= 2) {
        // Each pair's 1x1 weights and bias, then its depthwise weights and bias.
        let parts: Option<Vec<[Vec<f32>; 4]>> = pairs
            .iter()
            .map(|&(p, d)| {
                let (p, d) = (&graph.node[p], &graph.node[d]);
                Some([
                    constant(&p.input[1])?,
                    constant(&p.input[2])?,
                    constant(&d.input[1])?,
                    constant(&d.input[2])?,
                ])
            })
            .collect();
        let Some(parts) = parts else { continue };
        let sizes: Vec<i64> = parts.iter().map(|p| p[1].len() as i64).collect();
        let joined: [Vec<f32>; 4] =
            std::array::from_fn(|k| parts.iter().flat_map(|p| p[k].iter().copied()).collect());
        let outputs: i64 = sizes.iter().sum();
        let inputs = joined[0].len() as i64 / outputs.max(1);
        if inputs * outputs != joined[0].len() as i64 {
            continue;
        }
        let names: Vec<&str> = pairs
            .iter()
            .map(|&(p, _)| graph.node[p].name.as_str())
            .collect();
        let base = format!("{input}.heads");
        let f32_tensor = |suffix: &str, dims: Vec<i64>, values: &[f32]| TensorProto {
            name: format!("{base}.{suffix}"),
            dims,
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        let [pw_weights, pw_bias, dw_weights, dw_bias] = &joined;
        tensors.extend([
            f32_tensor("pw.weight", vec![outputs, inputs, 1, 1], pw_weights),
            f32_tensor("pw.bias", vec![outputs], pw_bias),
            f32_tensor("dw.weight", vec![outputs, 1, 3, 3], dw_weights),
            f32_tensor("dw.bias", vec![outputs], dw_bias),
            TensorProto {
                name: format!("{base}.split"),
                dims: vec![sizes.len() as i64],
                data_type: DataType::Int64 as i32,
                raw_data: sizes.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            },
        ]);
        let conv = |suffix: &str, kernel: i64, pad: i64, group: i64, from: String| NodeProto {
            op_type: "Conv".into(),
            name: format!("{}.{suffix}", names.join("+")),
            input: vec![
                from,
                format!("{base}.{suffix}.weight"),
                format!("{base}.{suffix}.bias"),
            ],
            output: vec![format!("{base}.{suffix}")],
            attribute: vec![
                ints_attribute("kernel_shape", vec![kernel, kernel]),
                ints_attribute("strides", vec![1, 1]),
                ints_attribute("pads", vec![pad; 4]),
                int_attribute("group", group),
            ],
            ..Default::default()
        };
        let split = NodeProto {
            op_type: "Split".into(),
            name: format!("{}.split", names.join("+")),
            input: vec![format!("{base}.dw"), format!("{base}.split")],
            output: pairs
                .iter()
                .map(|&(_, d)| graph.node[d].output[0].clone())
                .collect(),
            attribute: vec![int_attribute("axis", 1)],
            ..Default::default()
        };
        let nodes = vec![
            conv("pw", 1, 0, 1, input.clone()),
            conv("dw", 3, 1, outputs, format!("{base}.pw")),
            split,
        ];
        // In the place of the first 1x1 node: after the activation, before every reader of
        // the pairs' outputs.
        let first = pairs.iter().map(|&(p, _)| p).min().expect("two pairs");
        merged.insert(first, nodes);
        gone.extend(pairs.iter().flat_map(|&(p, d)| [p, d]));
    }
    graph.initializer.extend(tensors);
    let nodes = std::mem::take(&mut graph.node);
    for (i, n) in nodes.into_iter().enumerate() {
        if let Some(group) = merged.remove(&i) {
            graph.node.extend(group);
        }
        if !gone.contains(&i) {
            graph.node.push(n);
        }
    }
}

/// SFace's layers: renames each depthwise convolution (3x3, padding 1, stride 1 or 2, with
/// constant weights and bias) next to a `PRelu` to `DEPTHWISE_PRELU`, taking in the `PRelu`
/// whose output it alone reads and the `PRelu` that alone reads its output, when their
/// slopes are constants of one value per channel. Returns how many.
pub fn fuse_depthwise_prelu(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let readers = readers(graph);
    // A PRelu whose slopes are `channels` constants, one per channel.
    let prelu_of = |n: &NodeProto, channels: usize| per_channel_prelu(graph, n) == Some(channels);
    let mut fused: Vec<(usize, NodeProto)> = Vec::new();
    let mut absorbed: HashSet<usize> = HashSet::new();
    for at in 0..graph.node.len() {
        let n = &graph.node[at];
        let Some(conv) = conv_geometry(n, graph).filter(|_| n.input.len() == 3) else {
            continue;
        };
        let (stride, channels) = match conv.dims[..] {
            [c, 1, 3, 3] if conv.group == c && conv.pads == [1; 4] => (conv.stride, c as usize),
            _ => continue,
        };
        if float_dims(graph, &n.input[2]) != Some(vec![channels as i64]) {
            continue;
        }
        let only_reader = |name: &str| readers.get(name) == Some(&1);
        let before = graph.node.iter().position(|p| {
            p.output.first() == Some(&n.input[0])
                && prelu_of(p, channels)
                && only_reader(&p.output[0])
        });
        let before = before.filter(|p| !absorbed.contains(p));
        let after = graph
            .node
            .iter()
            .position(|r| r.input.first() == Some(&n.output[0]) && prelu_of(r, channels))
            .filter(|_| only_reader(&n.output[0]));
        if before.is_none() && after.is_none() {
            continue;
        }
        let mut node = NodeProto {
            op_type: DEPTHWISE_PRELU.into(),
            name: n.name.clone(),
            input: vec![n.input[0].clone(), n.input[1].clone(), n.input[2].clone()],
            output: n.output.clone(),
            ..Default::default()
        };
        if let Some(p) = before {
            let p = &graph.node[p];
            node.input[0] = p.input[0].clone();
            node.input.push(p.input[1].clone());
        }
        if let Some(r) = after {
            let r = &graph.node[r];
            node.input.push(r.input[1].clone());
            node.output = r.output.clone();
        }
        node.attribute = vec![
            int_attribute("stride", stride),
            int_attribute("input_prelu", before.is_some() as i64),
            int_attribute("output_prelu", after.is_some() as i64),
        ];
        absorbed.extend(before.into_iter().chain(after));
        absorbed.insert(at);
        // In the place of the node whose output it gives, after everything it reads.
        fused.push((after.unwrap_or(at), node));
    }
    let count = fused.len();
    let mut replace: HashMap<usize, NodeProto> = fused.into_iter().collect();
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| match replace.remove(&i) {
            Some(fused) => Some(fused),
            None if absorbed.contains(&i) => None,
            None => Some(n),
        })
        .collect();
    count
}

/// The number of slopes of a `PRelu` whose slopes are constants of one value per channel of
/// an NCHW input (shaped `[c, 1, 1]` or `[1, c, 1, 1]`).
fn per_channel_prelu(graph: &GraphProto, n: &NodeProto) -> Option<usize> {
    if n.op_type != "PRelu" || n.input.len() != 2 || n.output.len() != 1 {
        return None;
    }
    let slopes = graph.initializer.iter().find(|t| t.name == n.input[1])?;
    let len = floats(slopes)?.len();
    match slopes.dims[..] {
        [c, 1, 1] | [1, c, 1, 1] if c as usize == len => Some(len),
        _ => None,
    }
}

/// Renames each `PRelu` with a slope per channel to `PRELU`: tract runs the product by the
/// slopes channel by channel (0.45 ms for SFace's last, 50k values). Returns how many.
fn own_prelus(graph: &mut GraphProto) -> usize {
    let renamed: Vec<usize> = (0..graph.node.len())
        .filter(|&i| per_channel_prelu(graph, &graph.node[i]).is_some())
        .collect();
    for &i in &renamed {
        graph.node[i].op_type = PRELU.into();
    }
    renamed.len()
}

/// How many nodes read each value, a graph output counting as one.
pub(super) fn readers(graph: &GraphProto) -> HashMap<String, usize> {
    let mut readers: HashMap<String, usize> = HashMap::new();
    let names = graph.node.iter().flat_map(|n| &n.input);
    for name in names.chain(graph.output.iter().map(|o| &o.name)) {
        *readers.entry(name.clone()).or_default() += 1;
    }
    readers
}

/// Merges each run of renamed nodes, where every node but the first is the only reader of
/// the one before (as its data input), into one `CHAIN` node at the place of the run's last
/// node. A run needs a convolution, whose weights give its channels.
fn merge_chains(graph: &mut GraphProto) {
    let is_kernel =
        |n: &NodeProto| [DEPTHWISE, POINTWISE, MAX_POOL, STEM].contains(&n.op_type.as_str());
    let readers = readers(graph);
    // The node after each kernel node in a run.
    let mut next = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        if !is_kernel(n) || readers.get(n.output[0].as_str()) != Some(&1) {
            continue;
        }
        if let Some(j) = graph
            .node
            .iter()
            .position(|r| is_kernel(r) && r.input.first() == Some(&n.output[0]))
        {
            next.insert(i, j);
        }
    }
    let follows: HashSet<usize> = next.values().copied().collect();
    let mut merged = Vec::new();
    for start in
        (0..graph.node.len()).filter(|i| is_kernel(&graph.node[*i]) && !follows.contains(i))
    {
        let mut run = vec![start];
        while let Some(&j) = next.get(run.last().expect("a node")) {
            run.push(j);
        }
        let channels = run
            .iter()
            .rev()
            .map(|&i| &graph.node[i])
            .find(|n| n.op_type != MAX_POOL)
            .and_then(|n| float_dims(graph, &n.input[1]))
            .and_then(|d| d.first().copied());
        let has_stem = run.iter().any(|&i| graph.node[i].op_type == STEM);
        let (Some(channels), true) = (channels, run.len() >= 2 || has_stem) else {
            continue;
        };
        let nodes: Vec<&NodeProto> = run.iter().map(|&i| &graph.node[i]).collect();
        let ints = |name: &str, f: &dyn Fn(&NodeProto) -> i64| {
            ints_attribute(name, nodes.iter().map(|n| f(n)).collect())
        };
        let node = NodeProto {
            op_type: CHAIN.into(),
            name: nodes[0].name.clone(),
            input: std::iter::once(nodes[0].input[0].clone())
                .chain(nodes.iter().flat_map(|n| n.input[1..].iter().cloned()))
                .collect(),
            output: nodes[nodes.len() - 1].output.clone(),
            attribute: vec![
                ints("kinds", &|n| match n.op_type.as_str() {
                    POINTWISE => 0,
                    DEPTHWISE => 1,
                    MAX_POOL => 2,
                    _ => 3,
                }),
                ints("relus", &|n| int(n, "relu").unwrap_or(0)),
                ints("arity", &|n| n.input.len() as i64 - 1),
                int_attribute("channels", channels),
            ],
            ..Default::default()
        };
        merged.push((run, node));
    }
    let mut replace = HashMap::new();
    let mut drop = HashSet::new();
    for (run, node) in merged {
        drop.extend(run[..run.len() - 1].iter().copied());
        replace.insert(run[run.len() - 1], node);
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(i, n)| replace.remove(&i).unwrap_or(n))
        .collect();
}

/// An attribute of one integer.
fn int_attribute(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// An attribute of integers.
fn ints_attribute(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints,
        ..Default::default()
    }
}

fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

fn int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Whether no attribute other than `known` is set, and `auto_pad` (if any) is `NOTSET`.
fn only_attributes(n: &NodeProto, known: &[&str]) -> bool {
    n.attribute
        .iter()
        .all(|a| known.contains(&a.name.as_str()) || (a.name == "auto_pad" && a.s == b"NOTSET"))
}

/// `DEPTHWISE`, `POINTWISE` or `STEM` for a convolution those kernels compute exactly.
fn conv_kind(n: &NodeProto, graph: &GraphProto) -> Option<&'static str> {
    let conv = conv_geometry(n, graph)?;
    match (conv.stride, &conv.dims[..], conv.pads == [1; 4]) {
        (2, [_, _, 3, 3], true) if conv.group == 1 => Some(STEM),
        (1, &[c, 1, 3, 3], true) if conv.group == c => Some(DEPTHWISE),
        (1, [_, _, 1, 1], _) if conv.group == 1 && conv.pads == [0; 4] => Some(POINTWISE),
        _ => None,
    }
}

/// The dims of the f32 constant `name`, if it is one.
fn float_dims(graph: &GraphProto, name: &str) -> Option<Vec<i64>> {
    graph
        .initializer
        .iter()
        .find(|t| t.name == name && floats(t).is_some())
        .map(|t| t.dims.clone())
}

/// What [`conv_geometry`] reads of a `Conv`.
struct ConvGeometry {
    /// The weights' dims, `[outputs, inputs / group, kh, kw]`.
    dims: Vec<i64>,
    /// 1 or 2, both ways.
    stride: i64,
    pads: Vec<i64>,
    group: i64,
}

/// A `Conv` with constant weights (and bias, if any), no attribute the kernels do not know,
/// no dilation and a stride of 1 or 2 both ways.
fn conv_geometry(n: &NodeProto, graph: &GraphProto) -> Option<ConvGeometry> {
    if n.op_type != "Conv" || !(2..=3).contains(&n.input.len()) || n.output.len() != 1 {
        return None;
    }
    if !only_attributes(
        n,
        &["kernel_shape", "strides", "pads", "dilations", "group"],
    ) || ints(n, "dilations").is_some_and(|d| d != [1, 1])
    {
        return None;
    }
    let dims = float_dims(graph, &n.input[1])?;
    if n.input.len() == 3 && float_dims(graph, &n.input[2]).is_none() {
        return None;
    }
    let stride = match ints(n, "strides").as_deref() {
        None | Some([1, 1]) => 1,
        Some([2, 2]) => 2,
        _ => return None,
    };
    Some(ConvGeometry {
        dims,
        stride,
        pads: ints(n, "pads").unwrap_or(vec![0; 4]),
        group: int(n, "group").unwrap_or(1),
    })
}

fn is_max_pool_2x2(n: &NodeProto) -> bool {
    n.input.len() == 1
        && n.output.len() == 1
        && only_attributes(
            n,
            &[
                "kernel_shape",
                "strides",
                "pads",
                "ceil_mode",
                "dilations",
                "storage_order",
            ],
        )
        && ints(n, "kernel_shape") == Some(vec![2, 2])
        && ints(n, "strides") == Some(vec![2, 2])
        && ints(n, "pads").is_none_or(|p| p == [0; 4])
        && ints(n, "dilations").is_none_or(|d| d == [1, 1])
        && int(n, "ceil_mode").unwrap_or(0) == 0
        && int(n, "storage_order").unwrap_or(0) == 0
}

/// A renamed node, before typing: its weights are still inputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KernelNode {
    /// A PReLU with a slope per channel; its inputs: the activation and the slopes.
    PRelu,
    /// A depthwise convolution with PReLUs around it (see [`fuse_depthwise_prelu`]); its
    /// inputs: the activation, weights, bias, then the slopes of each PReLU it has.
    DepthwisePRelu {
        stride: usize,
        input_prelu: bool,
        output_prelu: bool,
    },
    /// Layers of those kinds in a row, each with its ReLU and its number of weight inputs;
    /// `channels` out. With `upsampled_sum`, the chain's input is its first input plus its
    /// last upsampled 2x ([`fuse_upsampled_sums`]).
    Chain {
        stages: Vec<(StageKind, bool, usize)>,
        channels: usize,
        upsampled_sum: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StageKind {
    Pointwise,
    Depthwise,
    MaxPool,
    Stem,
}

impl Expansion for KernelNode {
    fn name(&self) -> StaticName {
        match self {
            KernelNode::DepthwisePRelu { .. } => DEPTHWISE_PRELU.into(),
            KernelNode::PRelu => PRELU.into(),
            KernelNode::Chain { .. } => CHAIN.into(),
        }
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_output_arity(outputs, 1)?;
        let arity = match self {
            KernelNode::PRelu => 2..=2,
            KernelNode::DepthwisePRelu {
                input_prelu,
                output_prelu,
                ..
            } => {
                let n = 3 + *input_prelu as usize + *output_prelu as usize;
                n..=n
            }
            KernelNode::Chain {
                stages,
                upsampled_sum,
                ..
            } => {
                let n = 1 + stages.iter().map(|s| s.2).sum::<usize>() + *upsampled_sum as usize;
                n..=n
            }
        };
        if !arity.contains(&inputs.len()) {
            bail!(
                "{} takes {arity:?} inputs, got {}",
                self.name(),
                inputs.len()
            );
        }
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        match self {
            KernelNode::PRelu => s.equals(&outputs[0].shape, &inputs[0].shape),
            &KernelNode::DepthwisePRelu { stride, .. } => {
                s.given(&inputs[0].shape, move |s, shape| {
                    let mut out = shape.clone();
                    for side in [2, 3] {
                        out[side] = (shape[side].clone() + (stride as i64 - 1)) / stride as i64;
                    }
                    s.equals(&outputs[0].shape, ShapeFactoid::from(out))
                })
            }
            KernelNode::Chain {
                stages,
                channels,
                upsampled_sum,
            } => {
                if *upsampled_sum {
                    let coarse = &inputs[inputs.len() - 1];
                    s.equals(&coarse.datum_type, f32::datum_type())?;
                    s.equals(&coarse.rank, 4)?;
                    s.equals(&coarse.shape[1], &inputs[0].shape[1])?;
                }
                let halvings = halvings(stages.iter().map(|s| s.0));
                let channels = *channels;
                s.given(&inputs[0].shape, move |s, shape| {
                    let mut out = shape.clone();
                    out[1] = channels.to_dim();
                    for &round_up in &halvings {
                        for side in [2, 3] {
                            out[side] = (out[side].clone() + round_up as i64) / 2;
                        }
                    }
                    s.equals(&outputs[0].shape, ShapeFactoid::from(out))
                })
            }
        }
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let constant = |i: usize| -> TractResult<Arc<Tensor>> {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .with_context(|| format!("{prefix}: input {i} is not a constant"))
        };
        let channels_in = model.outlet_fact(inputs[0])?.shape[1].to_usize()?;
        // The weights at input `at` and the bias after them if there are `arity` = 2.
        let weights_at = |at: usize, arity: usize| -> TractResult<(Vec<f32>, Vec<f32>)> {
            let w = constant(at)?;
            let outputs = w.shape()[0];
            let w = w.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
            let b = if arity == 2 {
                let b = constant(at + 1)?;
                ensure!(
                    b.len() == outputs,
                    "{prefix}: {} biases for {outputs} outputs",
                    b.len()
                );
                b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()
            } else {
                vec![0.0; outputs]
            };
            Ok((w, b))
        };
        let depthwise = |(w, bias): (Vec<f32>, Vec<f32>), channels: usize, relu| {
            ensure!(
                bias.len() == channels && w.len() == 9 * channels,
                "{prefix}: depthwise weights for {} channels, input has {channels}",
                bias.len()
            );
            let taps = w
                .chunks_exact(9)
                .map(|k| k.try_into().expect("9 taps"))
                .collect();
            Ok(Depthwise3x3 { taps, bias, relu })
        };
        let pointwise = |(w, bias): (Vec<f32>, Vec<f32>), channels: usize, relu| {
            ensure!(
                w.len() == bias.len() * channels,
                "{prefix}: pointwise weights for {} inputs, input has {channels}",
                w.len() / bias.len().max(1)
            );
            Ok(Pointwise::new(&w, bias, channels, relu))
        };
        let layer = match self {
            KernelNode::PRelu => {
                let slopes = constant(1)?;
                ensure!(
                    slopes.len() == channels_in,
                    "{prefix}: {} PReLU slopes for {channels_in} channels",
                    slopes.len()
                );
                Layer::PRelu(slopes.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            }
            &KernelNode::DepthwisePRelu {
                stride,
                input_prelu,
                output_prelu,
            } => {
                let Depthwise3x3 { taps, bias, .. } =
                    depthwise(weights_at(1, 2)?, channels_in, false)?;
                let mut at = 3;
                let mut slopes = |on: bool| -> TractResult<Option<Vec<f32>>> {
                    if !on {
                        return Ok(None);
                    }
                    let s = constant(at)?;
                    at += 1;
                    ensure!(
                        s.len() == channels_in,
                        "{prefix}: {} PReLU slopes for {channels_in} channels",
                        s.len()
                    );
                    Ok(Some(s.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
                };
                let input_slopes = slopes(input_prelu)?;
                let output_slopes = slopes(output_prelu)?;
                Layer::DepthwisePRelu(DepthwisePRelu {
                    taps,
                    bias,
                    stride,
                    input_slopes,
                    output_slopes,
                })
            }
            KernelNode::Chain {
                stages,
                channels,
                upsampled_sum,
            } => {
                let (mut at, mut c) = (1, channels_in);
                let mut built = Vec::with_capacity(stages.len());
                for &(kind, relu, arity) in stages {
                    built.push(match kind {
                        StageKind::Pointwise => {
                            let p = pointwise(weights_at(at, arity)?, c, relu)?;
                            c = p.outputs();
                            Stage::Pointwise(p)
                        }
                        StageKind::Depthwise => {
                            Stage::Depthwise(depthwise(weights_at(at, arity)?, c, relu)?)
                        }
                        StageKind::MaxPool => Stage::MaxPool,
                        StageKind::Stem => {
                            let (w, bias) = weights_at(at, arity)?;
                            ensure!(
                                w.len() == bias.len() * 9 * c,
                                "{prefix}: stem weights for {} inputs, input has {c}",
                                w.len() / (9 * bias.len()).max(1)
                            );
                            let stem = Stem::new(&w, bias, c, relu);
                            c = stem.outputs();
                            Stage::Stem(stem)
                        }
                    });
                    at += arity;
                }
                ensure!(
                    c == *channels,
                    "{prefix}: the layers give {c} channels, the node says {channels}"
                );
                if *upsampled_sum {
                    Layer::SumChain(Chain::new(built))
                } else {
                    Layer::Chain(Chain::new(built))
                }
            }
        };
        let data = match layer {
            Layer::SumChain(_) => vec![inputs[0], inputs[inputs.len() - 1]],
            _ => vec![inputs[0]],
        };
        model.wire_node(prefix, KernelOp(Arc::new(layer)), &data)
    }
}

/// What a [`KernelOp`] computes.
#[derive(Debug, Clone, PartialEq)]
enum Layer {
    /// The slopes, per channel.
    PRelu(Vec<f32>),
    DepthwisePRelu(DepthwisePRelu),
    Chain(Chain),
    /// A chain on its first input plus its second upsampled 2x ([`UpsampledSum`]).
    SumChain(Chain),
}

/// Each time a chain's layers halve the height and width: rounding down (max pool, false)
/// or up (stem, true).
fn halvings(kinds: impl Iterator<Item = StageKind>) -> Vec<bool> {
    kinds
        .filter_map(|k| match k {
            StageKind::MaxPool => Some(false),
            StageKind::Stem => Some(true),
            _ => None,
        })
        .collect()
}

impl Layer {
    /// Output `[n, c, h, w]` for input `[n, c, h, w]`.
    fn output_shape<D: DimLike>(&self, shape: &[D]) -> TVec<D> {
        let mut out: TVec<D> = shape.iter().cloned().collect();
        match self {
            Layer::PRelu(_) => {}
            Layer::DepthwisePRelu(d) => {
                for side in [2, 3] {
                    out[side] = (shape[side].clone() + D::from(d.stride - 1)) / d.stride;
                }
            }
            Layer::Chain(chain) | Layer::SumChain(chain) => {
                // As `Chain::dims`, for symbolic sizes too.
                let halve = |out: &mut TVec<D>, round_up: usize| {
                    for side in [2, 3] {
                        out[side] = (out[side].clone() + D::from(round_up)) / 2;
                    }
                };
                for stage in chain.stages() {
                    match stage {
                        Stage::Pointwise(p) => out[1] = D::from(p.outputs()),
                        Stage::Depthwise(_) => {}
                        Stage::MaxPool => halve(&mut out, 0),
                        Stage::Stem(k) => {
                            out[1] = D::from(k.outputs());
                            halve(&mut out, 1);
                        }
                    }
                }
            }
        }
        out
    }
}

/// A model's first layer when it is a [`Chain`], taken out of the model so that its input
/// rows can be made as it reads them ([`Chain::run_rows`]) instead of read from a tensor.
#[derive(Debug, Clone)]
pub struct InputChain {
    layer: Arc<Layer>,
    /// The model input's `[1, c, h, w]`.
    input: Dims,
}

impl InputChain {
    /// Cuts `model` (typed, with a fixed input shape) after its first layer when that is our
    /// chain and the input's only reader: the model's input becomes the chain's output.
    pub fn split_off(model: &mut TypedModel) -> TractResult<InputChain> {
        let [source] = model.input_outlets()? else {
            bail!("the model has {} inputs, not one", model.inputs.len());
        };
        let source = *source;
        let fact = model.outlet_fact(source)?;
        let shape = fact
            .shape
            .as_concrete()
            .context("an input of fixed shape")?;
        let [1, c, h, w] = *shape else {
            bail!("input of shape {shape:?}, not [1, c, h, w]");
        };
        let [reader] = model.outlet_successors(source) else {
            bail!("the model's input has several readers");
        };
        let node = model.node(reader.node);
        let layer = match node.op_as::<KernelOp>() {
            Some(KernelOp(layer)) if matches!(**layer, Layer::Chain(_)) => layer.clone(),
            _ => bail!("the model's first layer, {}, is not a chain", node.name),
        };
        model.set_input_outlets(&[OutletId::new(node.id, 0)])?;
        model.compact()?;
        Ok(InputChain {
            layer,
            input: Dims { c, h, w },
        })
    }

    /// The chain on rows of its input made by `source`: its output, `[1, c, h, w]`.
    pub fn run<S: RowSource>(&self, source: &S) -> TractResult<Tensor> {
        let Layer::Chain(chain) = &*self.layer else {
            unreachable!("split_off keeps only chains")
        };
        let Dims { c, h, w } = self.input;
        let out_shape = self.layer.output_shape(&[1, c, h, w]);
        // SAFETY: as in `KernelOp::eval`, the chain writes every element of its output.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut view = output.try_as_plain_ram_mut()?;
        chain.run_rows(source, view.as_slice_mut::<f32>()?, self.input);
        Ok(output)
    }
}

/// One layer run by `conv_kernels`: NCHW f32 in, NCHW f32 out.
#[derive(Debug, Clone)]
pub struct KernelOp(Arc<Layer>);

/// The same layer, not merely equal weights: tract merges equal ops with equal inputs, and
/// comparing weights would cost more than it could save.
impl PartialEq for KernelOp {
    fn eq(&self, other: &KernelOp) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for KernelOp {}

impl Op for KernelOp {
    fn name(&self) -> StaticName {
        match &*self.0 {
            Layer::PRelu(_) => PRELU.into(),
            Layer::DepthwisePRelu(_) => DEPTHWISE_PRELU.into(),
            Layer::Chain(_) | Layer::SumChain(_) => CHAIN.into(),
        }
    }

    op_as_typed_op!();
}

impl EvalOp for KernelOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, coarse) = match &*self.0 {
            Layer::SumChain(_) => {
                let (fine, coarse) = args_2!(inputs);
                (fine, Some(coarse))
            }
            _ => (args_1!(inputs), None),
        };
        let shape = input.shape();
        ensure!(
            shape.len() == 4,
            "{}: input of rank {}",
            self.name(),
            shape.len()
        );
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let out_shape = self.0.output_shape(shape);
        // SAFETY: every kernel writes each element of its output (the tests check them all
        // against direct loops); nothing reads the tensor before.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut view = output.try_as_plain_ram_mut()?;
        let y = view.as_slice_mut::<f32>()?;
        let (in_len, out_len) = (c * h * w, out_shape[1..].iter().product::<usize>());
        let coarse = match &coarse {
            Some(t) => {
                ensure!(
                    t.shape() == [n, c, h / 2, w / 2] && h % 2 == 0 && w % 2 == 0,
                    "chain: {:?} upsampled 2x does not give {:?}",
                    t.shape(),
                    shape
                );
                t.try_as_plain_ram()?.as_slice::<f32>()?
            }
            None => &[],
        };
        for b in 0..n {
            let (x, y) = (
                &x[b * in_len..(b + 1) * in_len],
                &mut y[b * out_len..(b + 1) * out_len],
            );
            match &*self.0 {
                Layer::PRelu(slopes) => {
                    ensure!(slopes.len() == c, "PReLU: {c} channels in");
                    prelu_planes(x, y, slopes)
                }
                Layer::DepthwisePRelu(d) => {
                    ensure!(d.channels() == c, "depthwise: {c} channels in");
                    d.run(x, y, h, w)
                }
                Layer::Chain(chain) => {
                    let dims = Dims { c, h, w };
                    ensure!(chain.dims(dims).is_some(), "chain: {c} channels in");
                    chain.run(x, y, dims)
                }
                Layer::SumChain(chain) => {
                    let dims = Dims { c, h, w };
                    ensure!(chain.dims(dims).is_some(), "chain: {c} channels in");
                    let coarse_len = in_len / 4;
                    let source = UpsampledSum {
                        fine: x,
                        coarse: &coarse[b * coarse_len..(b + 1) * coarse_len],
                        dims,
                    };
                    chain.run_rows(&source, y, dims)
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for KernelOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].rank() == 4,
            "{}: input of rank {}",
            self.name(),
            inputs[0].rank()
        );
        let shape = self.0.output_shape(&inputs[0].shape.to_tvec());
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}
