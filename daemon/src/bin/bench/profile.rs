//! `deepstack-bench profile`: where a model's time goes, op by op, with tract's kernels only
//! and with ours (`conv_ops`), in one process on one thread.
//!
//! ```text
//! cargo run --release -p deepstackd --bin deepstack-bench -- profile [--repeat 20] [--size 640x480]
//!     [--model yunet|sface] [--by-node] [--only ours|tract]
//! ```
//! Both plans run the same input (YuNet: `group_1280x720.jpg` scaled to the size by the
//! detector's own `letterbox_bgr`; SFace: that photo squeezed to 112x112, without SFace's
//! final layer, which `linear_head` runs); the largest difference between their outputs is printed, then
//! each plan's median total and its time by op kind (the sum of per-node times, measured
//! around each node's evaluation), then our plan's whole runs on one thread and with the
//! machine's other cores as helpers (as the daemon lends its idle threads to a lone request);
//! for SFace also a run on a pool of every core with tract's ops split (a lone face).
//! `--only` builds and runs one plan, on one thread: for a profiler, or for counting
//! instructions under qemu (BENCHMARKS.md, the Raspberry Pi).

use std::collections::BTreeMap;
use std::time::Instant;

use deepstackd::vision::align::CROP_SIZE;
use deepstackd::vision::conv_chain::with_helpers;
use deepstackd::vision::conv_kernels::{clear_upper_vector_state, run_plan, Isa};
use deepstackd::vision::detect::letterbox_bgr;
use deepstackd::vision::on_every_thread;
use deepstackd::vision::onnx_rewrite::{self, Kernels};
use deepstackd::vision::ModelFiles;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

use crate::{median, testdata, Error};

/// `deepstack-bench profile [--repeat N] [--size WxH] [--model M] [--by-node] [--only P]`.
pub fn run(args: &[String]) -> Result<(), Error> {
    let (mut repeat, mut w, mut h, mut sface, mut by_node) =
        (20usize, 640usize, 480usize, false, false);
    let mut kernels = vec![
        ("tract only", Kernels::TractOnly),
        ("our kernels", Kernels::Ours),
    ];
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().ok_or("--repeat takes a number")?.parse()?,
            "--size" => {
                let s = args.next().ok_or("--size takes WxH")?;
                let (sw, sh) = s.split_once('x').ok_or("--size takes WxH")?;
                (w, h) = (sw.parse()?, sh.parse()?);
                if w % 32 != 0 || h % 32 != 0 {
                    return Err("--size: both sides must be multiples of 32".into());
                }
            }
            "--by-node" => by_node = true,
            "--only" => {
                let only = match args.next().map(String::as_str) {
                    Some("ours") => Kernels::Ours,
                    Some("tract") => Kernels::TractOnly,
                    _ => return Err("--only takes ours or tract".into()),
                };
                kernels.retain(|&(_, k)| k == only);
            }
            "--model" => {
                sface = match args.next().map(String::as_str) {
                    Some("yunet") => false,
                    Some("sface") => true,
                    _ => return Err("--model takes yunet or sface".into()),
                }
            }
            other => return Err(format!("profile: unknown option {other}").into()),
        }
    }
    let repeat = repeat.max(1);
    let photo = image::open(testdata()?.join("group_1280x720.jpg"))?.to_rgb8();
    let (title, plans, input) = if sface {
        let bytes = ModelFiles::embedded().recognizer.bytes;
        let side = CROP_SIZE as usize;
        let plans = kernels
            .iter()
            .map(|&(name, k)| {
                let model = onnx_rewrite::load_with_int8_head(&bytes, k)?.0;
                Ok((name, plan(model, [1, 3, side, side])?))
            })
            .collect::<TractResult<Vec<_>>>()?;
        let crop = image::imageops::resize(&photo, CROP_SIZE, CROP_SIZE, image::imageops::Triangle);
        let data: Vec<f32> = (0..3)
            .flat_map(|c| crop.pixels().map(move |p| p.0[c] as f32))
            .collect();
        let input = Tensor::from_shape(&[1, 3, side, side], &data)?;
        (
            format!("SFace {side}x{side} (without its final layer)"),
            plans,
            input,
        )
    } else {
        let bytes = ModelFiles::embedded().detector.bytes;
        let plans = kernels
            .iter()
            .map(|&(name, k)| Ok((name, plan(onnx_rewrite::load(&bytes, k)?, [1, 3, h, w])?)))
            .collect::<TractResult<Vec<_>>>()?;
        let (w32, h32) = (w as u32, h as u32);
        let input = letterbox_bgr(&photo, w32, h32, w32, h32);
        (format!("YuNet {w}x{h}"), plans, input)
    };
    println!(
        "deepstack-bench profile: {title}, 1 thread, {repeat} runs, {} kernels ({})",
        Isa::detect().name(),
        std::env::consts::ARCH
    );
    if let [(_, tract), (_, ours)] = &plans[..] {
        let (a, b) = (
            tract.run(tvec!(input.clone().into()))?,
            ours.run(tvec!(input.clone().into()))?,
        );
        let mut worst = 0f32;
        for (a, b) in a.iter().zip(b.iter()) {
            let (a, b) = (
                a.to_plain_array_view::<f32>()?,
                b.to_plain_array_view::<f32>()?,
            );
            for (x, y) in a.iter().zip(b.iter()) {
                worst = worst.max((x - y).abs());
            }
        }
        println!("largest difference between the two plans' outputs: {worst:.2e}");
    }
    for (name, plan) in &plans {
        let mut state = plan.spawn()?;
        let mut totals = Vec::with_capacity(repeat);
        let mut by_kind: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        state.run(tvec!(input.clone().into()))?; // warm-up
        for _ in 0..repeat {
            let started = Instant::now();
            state.run_plan_with_eval(tvec!(input.clone().into()), |ctx, st, node, inputs| {
                let t = Instant::now();
                let out = eval(ctx, st, node, inputs);
                let key = if by_node {
                    format!("{} {}", node.op().name(), node.name)
                } else {
                    node.op().name().to_string()
                };
                let kind = by_kind.entry(key).or_default();
                kind.0 += 1;
                kind.1 += t.elapsed().as_secs_f64() * 1000.0;
                out
            })?;
            clear_upper_vector_state();
            totals.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!("\n{name}: median {:.1} ms per run", median(totals));
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        for (kind, (count, ms)) in kinds.iter().filter(|k| k.1 .1 / repeat as f64 >= 0.05) {
            println!(
                "  {kind:<26} {:>3} nodes {:>7.2} ms",
                count / repeat,
                ms / repeat as f64
            );
        }
    }
    // What a second thread buys a lone detection (the daemon lends its idle inference
    // threads to the chains): our plan alone and with 1..cores-1 helpers, in turns.
    let [_, (_, ours)] = &plans[..] else {
        return Ok(());
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\nour kernels, whole runs, helper threads alternating (median of {repeat}):");
    let mut times = vec![Vec::with_capacity(repeat); cores];
    for _ in 0..repeat {
        for (helpers, t) in times.iter_mut().enumerate() {
            let started = Instant::now();
            with_helpers(helpers, || run_plan(ours, input.clone()))?;
            t.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for (helpers, t) in times.into_iter().enumerate() {
        println!("  {} thread(s): {:.1} ms", helpers + 1, median(t));
    }
    if sface && cores > 1 {
        // A lone request's one face (`Pipeline::embed`): the run inside a pool of every
        // core, tract's matrix products and element-wise ops split among its threads.
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(cores).build()?);
        let mut t = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let started = Instant::now();
            on_every_thread(&pool, || run_plan(ours, input.clone()))?;
            t.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "  one face on a pool of {cores} threads, tract's ops split: {:.1} ms",
            median(t)
        );
    }
    Ok(())
}

/// `model`'s plan for an input of `shape`.
fn plan(model: InferenceModel, shape: [usize; 4]) -> TractResult<Arc<TypedRunnableModel>> {
    model
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()
}
