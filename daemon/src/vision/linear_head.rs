//! SFace's last layer, run by us with its weights kept int8.
//!
//! SFace ends in `Gemm(flatten[1, 50176], W[128, 50176]^T) + b`: 6.4M of its 9.7M weights.
//! Given to tract, the layer needs W in f32 (25.7 MB, plus tract's packed copy) and every face
//! streams those 25.7 MB through the CPU for 128 outputs. Kept int8 with its per-row scales
//! (what the shipped file stores), W is 6.4 MB and the product is one pass over it: the same
//! values (`(q - zero) * scale`, the file's own DequantizeLinear), summed in f32.
//!
//! Measured (release, x86, `deepstack-bench`): resident memory -19 MB; see BENCHMARKS.md for
//! the time per face.

use tract_onnx::pb::{tensor_proto::DataType, ModelProto, TensorProto, ValueInfoProto};

/// `y = scale ⊙ ((Q - zero) x) + bias`, Q int8 row-major `[outputs, inputs]`.
pub struct Int8Linear {
    q: Vec<i8>,
    zero: Vec<f32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Int8Linear {
    /// Number of inputs (length of x).
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Number of outputs (length of y).
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `y` for one input vector; `x.len()` must be [`Self::inputs`].
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.inputs, "linear head input length");
        let sum_x: f32 = x.iter().sum();
        (0..self.outputs())
            .map(|j| {
                let row = &self.q[j * self.inputs..(j + 1) * self.inputs];
                // (q - z) . x = q . x - z * sum(x)
                (crate::dot::dot(row, x) - self.zero[j] * sum_x) * self.scale[j] + self.bias[j]
            })
            .collect()
    }

    /// Removes a final `Gemm(A, DequantizeLinear(Q int8, scale, zero, axis=0)^T, C)` from the
    /// graph and returns it; the graph then outputs `A`. `None` (graph untouched) for any other
    /// ending.
    pub fn split_off(proto: &mut ModelProto) -> Option<Int8Linear> {
        let graph = proto.graph.as_mut()?;
        let [output] = graph.output.as_slice() else {
            return None;
        };
        let gemm_at = graph
            .node
            .iter()
            .position(|n| n.output.first() == Some(&output.name))?;
        let gemm = &graph.node[gemm_at];
        let attr = |name: &str, default: i64| {
            gemm.attribute
                .iter()
                .find(|a| a.name == name)
                .map_or(default, |a| a.i)
        };
        let attr_f = |name: &str| {
            gemm.attribute
                .iter()
                .find(|a| a.name == name)
                .map_or(1.0, |a| a.f)
        };
        if gemm.op_type != "Gemm"
            || gemm.input.len() != 3
            || attr("transA", 0) != 0
            || attr("transB", 0) != 1
            || attr_f("alpha") != 1.0
            || attr_f("beta") != 1.0
        {
            return None;
        }
        let (a, b, c) = (
            gemm.input[0].clone(),
            gemm.input[1].clone(),
            gemm.input[2].clone(),
        );
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let deq = graph.node.iter().find(|n| n.output.first() == Some(&b))?;
        let axis = deq
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(1, |a| a.i);
        if deq.op_type != "DequantizeLinear" || deq.input.len() != 3 || axis != 0 {
            return None;
        }
        let (q, scale, zero, bias) = (
            init(&deq.input[0])?,
            init(&deq.input[1])?,
            init(&deq.input[2])?,
            init(&c)?,
        );
        let [outputs, inputs] = q.dims[..] else {
            return None;
        };
        let (outputs, inputs) = (
            usize::try_from(outputs).ok()?,
            usize::try_from(inputs).ok()?,
        );
        let int8 = DataType::Int8 as i32;
        if q.data_type != int8 || zero.data_type != int8 || q.raw_data.len() != outputs * inputs {
            return None;
        }
        let head = Int8Linear {
            q: q.raw_data.iter().map(|&v| v as i8).collect(),
            zero: zero.raw_data.iter().map(|&v| f32::from(v as i8)).collect(),
            scale: floats(scale)?,
            bias: floats(bias)?,
            inputs,
        };
        if head.zero.len() != outputs || head.scale.len() != outputs || head.bias.len() != outputs {
            return None;
        }
        // The graph now ends at A; the weights are ours.
        let elem_type = output.r#type.clone();
        graph.node.remove(gemm_at);
        let dropped: Vec<String> = {
            let deq_at = graph
                .node
                .iter()
                .position(|n| n.output.first() == Some(&b))?;
            let deq = graph.node.remove(deq_at);
            deq.input.into_iter().chain([c]).collect()
        };
        graph.initializer.retain(|t| !dropped.contains(&t.name));
        graph.output = vec![ValueInfoProto {
            name: a,
            r#type: elem_type.map(|mut t| {
                // Same element type; the shape is tract's to infer.
                if let Some(tract_onnx::pb::type_proto::Value::TensorType(tensor)) = &mut t.value {
                    tensor.shape = None;
                }
                t
            }),
            ..Default::default()
        }];
        Some(head)
    }
}

/// f32 values of a tensor, raw little-endian or `float_data`.
pub(super) fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return None;
    }
    if t.raw_data.is_empty() {
        return Some(t.float_data.clone());
    }
    Some(
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_dequantized_product() {
        let (outputs, inputs) = (3, 37);
        let q: Vec<i8> = (0..outputs * inputs)
            .map(|i| ((i * 37) % 255) as i8)
            .collect();
        let head = Int8Linear {
            q: q.clone(),
            zero: vec![0.0, 3.0, -2.0],
            scale: vec![0.01, 0.02, 0.5],
            bias: vec![1.0, -1.0, 0.25],
            inputs,
        };
        let x: Vec<f32> = (0..inputs).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = head.apply(&x);
        for j in 0..outputs {
            let expected: f32 = (0..inputs)
                .map(|i| (f32::from(q[j * inputs + i]) - head.zero[j]) * head.scale[j] * x[i])
                .sum::<f32>()
                + head.bias[j];
            assert!(
                (y[j] - expected).abs() < 1e-4,
                "{j}: {} vs {expected}",
                y[j]
            );
        }
    }
}
