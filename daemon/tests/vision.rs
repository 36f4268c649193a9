//! The vision pipeline on real photos (fetched from PyPI packages by `tests/data/setup.py`).

mod common;

use std::sync::OnceLock;

use deepstackd::vision::calibration::{
    detection_score_for, recognition_confidence, Enrolment, DEFAULT_DETECTION_CONFIDENCE,
    DEFAULT_RECOGNITION_CONFIDENCE,
};
use deepstackd::vision::{
    align, DecodeError, DecodeLimits, EmbeddedFace, Face, Mode, ModelFiles, Photo, Pipeline,
    VisionError,
};

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| Pipeline::load(ModelFiles::embedded(), Mode::Medium).unwrap())
}

fn default_min_score() -> f32 {
    detection_score_for(DEFAULT_DETECTION_CONFIDENCE)
}

fn decode(name: &str) -> Photo {
    pipeline()
        .decode(&common::photo_bytes(name), DecodeLimits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn faces(name: &str) -> Vec<Face> {
    pipeline()
        .detect(&decode(name), default_min_score())
        .unwrap()
}

/// The one face of a portrait, embedded.
fn only_face(name: &str) -> EmbeddedFace {
    only_face_of(&decode(name), name)
}

fn only_face_of(photo: &Photo, name: &str) -> EmbeddedFace {
    let found = pipeline().detect(photo, default_min_score()).unwrap();
    assert_eq!(found.len(), 1, "{name}: expected one face, got {found:?}");
    pipeline().embed(photo, &found).unwrap().remove(0)
}

fn same_person(a: &str, b: &str) -> f32 {
    // One photo against one: what /match answers (a gallery of one sample).
    recognition_confidence(
        only_face(a).embedding.cosine(&only_face(b).embedding),
        &Enrolment::ONE_SAMPLE,
    )
}

#[test]
fn every_portrait_has_exactly_one_face() {
    for name in [
        "obama.jpg",
        "obama2.jpg",
        "obama3.jpg",
        "biden.jpg",
        "astronaut.png",
    ] {
        let found = faces(name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        let f = found[0];
        // Eyes above the nose, above the mouth: an upright face with sane landmarks.
        assert!(
            f.landmarks[0][0] < f.landmarks[1][0],
            "{name}: eyes swapped"
        );
        assert!(f.landmarks[2][1] > f.landmarks[0][1] && f.landmarks[3][1] > f.landmarks[2][1]);
        assert!(f.bbox.width() > 40.0 && f.bbox.height() > 40.0);
    }
}

#[test]
fn obamas_match_and_obama_biden_do_not() {
    for other in ["obama2.jpg", "obama3.jpg"] {
        let c = same_person("obama.jpg", other);
        assert!(c >= DEFAULT_RECOGNITION_CONFIDENCE, "obama vs {other}: {c}");
    }
    let c = same_person("obama.jpg", "biden.jpg");
    assert!(c < 0.45, "obama vs biden: {c}");
    let c = same_person("biden.jpg", "astronaut.png");
    assert!(c < 0.45, "biden vs astronaut: {c}");
}

#[test]
fn a_group_photo_gives_every_face_and_each_person_once() {
    let img = decode("group_1280x720.jpg");
    let found = pipeline().detect(&img, default_min_score()).unwrap();
    assert_eq!(found.len(), 4, "{found:?}");
    let embedded = pipeline().embed(&img, &found).unwrap();
    // The two Obamas in the group are the same person, the others are not.
    let obama = only_face("obama.jpg").embedding;
    let matches = embedded
        .iter()
        .filter(|f| {
            recognition_confidence(f.embedding.cosine(&obama), &Enrolment::ONE_SAMPLE) >= 0.67
        })
        .count();
    assert_eq!(matches, 2);
}

/// With idle threads allowed, a group photo's faces are embedded in parallel, and a lone
/// face's matrix products are split among threads: the same embeddings, bit for bit, in
/// the same order as on one thread.
#[test]
fn faces_embedded_on_idle_threads_equal_those_of_one_thread() {
    let p = Pipeline::load(ModelFiles::embedded(), Mode::Medium).unwrap();
    let photo = decode("group_1280x720.jpg");
    let faces = p.detect(&photo, default_min_score()).unwrap();
    assert_eq!(faces.len(), 4);
    let one_thread = p.embed(&photo, &faces).unwrap();
    let portrait = decode("obama.jpg");
    let face = p.detect(&portrait, default_min_score()).unwrap();
    assert_eq!(face.len(), 1);
    let lone_face_one_thread = p.embed(&portrait, &face).unwrap();
    // Three threads allowed, this one running: two are borrowed, for shares of 2, 1 and 1.
    p.allow_threads(3);
    // The shares run on the pool that allow_threads started: 3 - 1 parked threads.
    assert_eq!(rayon::current_num_threads(), 2);
    let _running = p.enter();
    let shared = p.embed(&photo, &faces).unwrap();
    for (a, b) in one_thread.iter().zip(&shared) {
        assert_eq!(a.face, b.face);
        assert_eq!(a.embedding.0, b.embedding.0);
    }
    assert_eq!(one_thread.len(), shared.len());
    // Alone (no other thread running the pipeline): the one face goes to the pool whole.
    let lone_face_shared = p.embed(&portrait, &face).unwrap();
    assert_eq!(
        lone_face_one_thread[0].embedding.0,
        lone_face_shared[0].embedding.0
    );
}

/// `vision::onnx_rewrite` widens the int8 weights and expands PRelu at load; tract on the
/// untouched file must give the same embedding.
#[test]
fn graph_rewrites_at_load_keep_the_embedding() {
    use tract_onnx::prelude::*;
    let crop = align::align(decode("obama.jpg").pixels(), &faces("obama.jpg")[0]);
    let ours = pipeline()
        .embed_crops(std::slice::from_ref(&crop))
        .unwrap()
        .remove(0);
    let bytes = ModelFiles::embedded().recognizer.bytes;
    let untouched = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(&bytes[..]))
        .unwrap();
    let theirs = run_on_face(&face_plan(untouched), &crop);
    let norm = theirs.iter().map(|x| x * x).sum::<f32>().sqrt();
    let c: f32 = ours.0.iter().zip(&theirs).map(|(a, b)| a * b / norm).sum();
    assert!(c > 0.9999, "cosine {c}");
}

/// SFace's plan for one face.
fn face_plan(model: tract_onnx::prelude::InferenceModel) -> FacePlan {
    use tract_onnx::prelude::*;
    model
        .with_input_fact(0, f32::fact([1, 3, 112, 112]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

type FacePlan = std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>;

/// The first output of `plan` for an aligned crop (raw RGB planes, as SFace takes them).
fn run_on_face(plan: &FacePlan, crop: &image::RgbImage) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let input: Vec<f32> = (0..3)
        .flat_map(|c| crop.pixels().map(move |p| p.0[c] as f32))
        .collect();
    let input = Tensor::from_shape(&[1, 3, 112, 112], &input).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// YuNet's depthwise, pointwise and max pool layers run by our kernels (`conv_ops`): the
/// rewrite takes every one of them, and on a real photo each of the twelve heads equals what
/// tract computes for the same graph.
#[test]
fn the_detectors_own_kernels_give_tracts_outputs() {
    use deepstackd::vision::onnx_rewrite;
    use tract_onnx::prelude::*;
    let (h, w) = (480usize, 640usize);
    let plan = |model: InferenceModel| {
        model
            .with_input_fact(0, f32::fact([1, 3, h, w]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
    };
    let bytes = ModelFiles::embedded().detector.bytes;
    let tract_only = plan(onnx_rewrite::load(&bytes, onnx_rewrite::Kernels::TractOnly).unwrap());
    let ours = plan(onnx_rewrite::load(&bytes, onnx_rewrite::Kernels::Ours).unwrap());
    let count = |name: &str| {
        ours.model()
            .nodes()
            .iter()
            .filter(|n| n.op().name() == name)
            .count()
    };
    // 53 convolutions (the stem, 26 pointwise, 26 depthwise: the heads' 3x3 too), their
    // ReLUs and the 4 max pools run in 7 chains: the backbone from the input to 80x60, the
    // 40x30 and 20x15 stages, the two neck units (the 80x60 one with that scale's heads)
    // and the heads of 40x30 and of 20x15. Each scale's four heads are one 1x1 and one
    // depthwise convolution. No convolution, pool or ReLU is left to tract, nor the neck's
    // upsampling and sums: the neck units sum their input rows as they read them. The heads
    // are output as planes, not moved channels-last (`MoveAxis`) by tract.
    assert_eq!(count("DeepstackdChain"), 7);
    let left_to_tract: Vec<String> = ours
        .model()
        .nodes()
        .iter()
        .map(|n| n.op().name().to_string())
        .filter(|name| {
            [
                "Conv", "MatMul", "Pool", "Max", "Upsample", "Resize", "Add", "MoveAxis",
            ]
            .iter()
            .any(|kind| name.contains(kind))
        })
        .collect();
    assert!(left_to_tract.is_empty(), "{left_to_tract:?}");
    let (w32, h32) = (w as u32, h as u32);
    let photo = decode("group_1280x720.jpg");
    let input = deepstackd::vision::detect::letterbox_bgr(photo.pixels(), w32, h32, w32, h32);
    let expected = tract_only.run(tvec!(input.clone().into())).unwrap();
    let got = ours.run(tvec!(input.clone().into())).unwrap();
    // A lone request shares the backbone's rows with an idle thread: the same outputs.
    let shared =
        deepstackd::vision::conv_chain::with_helpers(1, || ours.run(tvec!(input.into())).unwrap());
    assert_eq!(got.len(), 12);
    for (a, b) in got.iter().zip(shared.iter()) {
        assert_eq!(
            a.to_plain_array_view::<f32>().unwrap(),
            b.to_plain_array_view::<f32>().unwrap()
        );
    }
    for (k, (a, b)) in got.iter().zip(expected.iter()).enumerate() {
        let (a, b) = (
            a.to_plain_array_view::<f32>().unwrap(),
            b.to_plain_array_view::<f32>().unwrap(),
        );
        assert_eq!(a.shape(), b.shape(), "head {k}");
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "head {k}: differs by up to {worst}");
    }
}

/// The detector runs YuNet's backbone apart, on letterbox rows made as it reads them
/// (`InputChain`, `Letterbox`): its heads are the same bit for bit as the whole plan's on the
/// letterbox tensor, for a scaled and an unscaled photo with padding below, on one thread and
/// with the backbone's rows shared (each band then makes its own rows from the middle).
#[test]
fn the_backbone_on_letterbox_rows_gives_the_whole_plans_heads() {
    use deepstackd::vision::conv_chain::with_helpers;
    use deepstackd::vision::conv_ops::InputChain;
    use deepstackd::vision::detect::{letterbox_bgr, Letterbox};
    use deepstackd::vision::onnx_rewrite;
    use tract_onnx::prelude::*;
    let bytes = ModelFiles::embedded().detector.bytes;
    let model = onnx_rewrite::load(&bytes, onnx_rewrite::Kernels::Ours).unwrap();
    // (photo, its size at the detector's input, the input shape)
    for (file, (sw, sh), (pw, ph)) in [
        ("rocket.jpg", (640, 427), (640, 480)),
        ("group_1280x720.jpg", (640, 360), (640, 384)),
        ("obama.jpg", (512, 640), (512, 640)),
    ] {
        let optimized = model
            .clone()
            .with_input_fact(0, f32::fact([1, 3, ph as usize, pw as usize]).into())
            .unwrap()
            .into_optimized()
            .unwrap();
        let whole = optimized.clone().into_runnable().unwrap();
        let mut rest = optimized;
        let backbone = InputChain::split_off(&mut rest).unwrap();
        let rest = rest.into_runnable().unwrap();
        let photo = decode(file);
        let tensor = letterbox_bgr(photo.pixels(), sw, sh, pw, ph);
        let expected = whole.run(tvec!(tensor.into())).unwrap();
        assert_eq!(expected.len(), 12);
        let letterbox = Letterbox::new(photo.pixels(), sw, sh, pw);
        for helpers in [0, 1, 3] {
            let got = with_helpers(helpers, || {
                let rows = backbone.run(&letterbox).unwrap();
                rest.run(tvec!(rows.into())).unwrap()
            });
            for (k, (a, b)) in got.iter().zip(expected.iter()).enumerate() {
                assert_eq!(
                    a.to_plain_array_view::<f32>().unwrap(),
                    b.to_plain_array_view::<f32>().unwrap(),
                    "{file}, {helpers} helpers: head {k}"
                );
            }
        }
    }
}

/// SFace's depthwise layers run by our kernel with the PReLUs around them (`conv_ops`): all
/// 13 are taken, with 26 of the 27 PReLUs (the stem's, their own, and every pointwise
/// layer's but the last, which runs as our own op), and on a real face the body's output
/// equals tract's.
#[test]
fn the_recognizers_own_kernels_give_tracts_output() {
    use deepstackd::vision::onnx_rewrite::{self, Kernels};
    let plan = |kernels| {
        let bytes = ModelFiles::embedded().recognizer.bytes;
        face_plan(
            onnx_rewrite::load_with_int8_head(&bytes, kernels)
                .unwrap()
                .0,
        )
    };
    let (tract_only, ours) = (plan(Kernels::TractOnly), plan(Kernels::Ours));
    let kinds: Vec<String> = ours
        .model()
        .nodes()
        .iter()
        .map(|n| n.op().name().to_string())
        .collect();
    let count = |name: &str| kinds.iter().filter(|k| k.contains(name)).count();
    assert_eq!(count("DeepstackdDepthwisePRelu"), 13, "{kinds:?}");
    assert_eq!(count("DepthWiseConv"), 0, "{kinds:?}");
    // The stem and the 13 pointwise layers stay tract's matrix products.
    assert_eq!(count("OptMatMul"), 14 + 13, "{kinds:?}"); // and their packing

    // The last pointwise layer's PReLU runs alone; none is left to tract (as Max(x, s * x)).
    assert_eq!(count("DeepstackdPRelu"), 1, "{kinds:?}");
    assert_eq!(count("Max"), 0, "{kinds:?}");
    let crop = align::align(decode("obama.jpg").pixels(), &faces("obama.jpg")[0]);
    let (a, b) = (run_on_face(&ours, &crop), run_on_face(&tract_only, &crop));
    assert_eq!(a.len(), 1024 * 7 * 7);
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "differs by up to {worst} (largest value {scale})"
    );
}

/// Another encoding of obama.jpg must give the same face: box and embedding.
fn assert_same_face_as_obama(name: &str) {
    let reference = only_face("obama.jpg");
    let other = only_face(name);
    let iou = reference.face.bbox.iou(&other.face.bbox);
    assert!(iou > 0.9, "{name}: box IoU {iou}");
    let c = reference.embedding.cosine(&other.embedding);
    assert!(c > 0.97, "{name}: embedding cosine {c}");
}

#[test]
fn cmyk_jpeg_and_webp_give_the_same_face() {
    assert_same_face_as_obama("obama_cmyk.jpg");
    assert_same_face_as_obama("obama.webp");
}

#[test]
fn exif_orientation_is_applied() {
    let upright = decode("obama.jpg");
    let rotated = decode("obama_exif_rot90.jpg");
    assert_eq!(upright.dimensions(), rotated.dimensions());
    assert_same_face_as_obama("obama_exif_rot90.jpg");
}

/// A 12 MP JPEG is decoded at half scale for the 640-pixel detector (a quarter of the
/// memory): the box still comes in the uploaded photo's pixels, EXIF orientation included,
/// and the embedding is as good as that of a full-scale decode.
#[test]
fn a_large_jpeg_is_decoded_at_reduced_scale_with_the_same_face() {
    // The second is stored 3000x4000, with an EXIF orientation that turns it upright.
    let size = (4000, 3000);
    for name in ["obama_12mp.jpg", "obama_12mp_exif_rot90.jpg"] {
        let reduced = decode(name);
        assert_eq!(reduced.dimensions(), size, "{name}");
        assert_eq!(reduced.pixels().dimensions(), (size.0 / 2, size.1 / 2));
        let full =
            deepstackd::vision::decode::decode(&common::photo_bytes(name), DecodeLimits::default())
                .unwrap();
        assert_eq!(full.dimensions(), size, "{name}");
        let (a, b) = (
            only_face_of(&reduced, name),
            only_face_of(&Photo::from(full), name),
        );
        let (ra, rb) = (a.face.bbox, b.face.bbox);
        for (x, y) in [
            (ra.x_min, rb.x_min),
            (ra.y_min, rb.y_min),
            (ra.x_max, rb.x_max),
            (ra.y_max, rb.y_max),
        ] {
            assert!(
                (x - y).abs() < 0.02 * rb.width(),
                "{name}: {ra:?} vs {rb:?}"
            );
        }
        // The 112x112 crop samples a 634-pixel face with a bilinear warp: at half scale it
        // aliases less, and comes out nearer the original portrait than the full decode.
        let original = only_face("obama.jpg").embedding;
        let (reduced_c, full_c) = (a.embedding.cosine(&original), b.embedding.cosine(&original));
        assert!(
            reduced_c >= full_c - 0.005,
            "{name}: cosine to obama.jpg {reduced_c} reduced, {full_c} full"
        );
        let c = a.embedding.cosine(&b.embedding);
        assert!(c > 0.95, "{name}: cosine {c} to the full-scale decode");
    }
}

#[test]
fn every_format_decodes_to_the_same_face() {
    for name in [
        "obama_progressive.jpg",
        "obama_gray.jpg",
        "obama_16bit.png",
        "obama_palette.png",
        "obama_rgba.png",
        "obama.bmp",
        "obama.gif",
        "obama.tiff",
    ] {
        let img = decode(name);
        assert_eq!(img.dimensions(), decode("obama.jpg").dimensions(), "{name}");
        let found = pipeline().detect(&img, default_min_score()).unwrap();
        assert_eq!(found.len(), 1, "{name}");
    }
    // Grey and palette lose colour, not the person.
    for name in ["obama_gray.jpg", "obama_palette.png", "obama.gif"] {
        let c = only_face("obama.jpg")
            .embedding
            .cosine(&only_face(name).embedding);
        assert!(c > 0.85, "{name}: {c}");
    }
}

#[test]
fn photos_without_people_have_no_face() {
    for name in ["chelsea.png", "coffee.png", "rocket.jpg"] {
        assert_eq!(faces(name), vec![], "{name}");
    }
}

#[test]
fn bad_bytes_are_decode_errors() {
    let limits = DecodeLimits::default();
    let err = |name: &str| match pipeline().decode(&common::photo_bytes(name), limits) {
        Ok(img) => panic!("{name} decoded to {:?}", img.dimensions()),
        Err(e) => e,
    };
    assert!(matches!(
        err("empty.jpg"),
        VisionError::Decode(DecodeError::Empty)
    ));
    assert!(matches!(
        err("not_an_image.jpg"),
        VisionError::Decode(DecodeError::UnknownFormat)
    ));
    assert!(matches!(
        err("obama_truncated.jpg"),
        VisionError::Decode(DecodeError::Corrupt(_))
    ));
    assert!(matches!(
        err("huge_header.png"),
        VisionError::Decode(DecodeError::TooManyPixels {
            width: 100_000,
            height: 100_000,
            ..
        })
    ));
}

#[test]
fn the_pixel_limit_is_checked_before_decoding() {
    let bytes = common::photo_bytes("obama.jpg");
    let (w, h) = decode("obama.jpg").dimensions();
    let exact = DecodeLimits {
        max_pixels: u64::from(w) * u64::from(h),
    };
    assert!(pipeline().decode(&bytes, exact).is_ok());
    let below = DecodeLimits {
        max_pixels: exact.max_pixels - 1,
    };
    assert!(matches!(
        pipeline().decode(&bytes, below),
        Err(VisionError::Decode(DecodeError::TooManyPixels { .. }))
    ));
}

/// Our warp against OpenCV's estimateAffinePartial2D + warpAffine, through SFace.
#[test]
fn alignment_agrees_with_opencv() {
    for name in ["obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.png"] {
        let img = decode(name);
        let face = pipeline().detect(&img, default_min_score()).unwrap()[0];
        let ours = align::align(img.pixels(), &face);
        let theirs = common::opencv_align(&common::photo(name), &face.landmarks);
        let e = pipeline().embed_crops(&[ours, theirs]).unwrap();
        let c = e[0].cosine(&e[1]);
        assert!(
            c >= 0.995,
            "{name}: cosine between our crop and OpenCV's: {c}"
        );
    }
}

#[test]
fn every_mode_finds_the_portrait_faces() {
    for mode in Mode::ALL {
        let p = Pipeline::load(ModelFiles::embedded(), mode).unwrap();
        let img = decode("obama_1280x720.jpg");
        let found = p.detect(&img, default_min_score()).unwrap();
        assert_eq!(found.len(), 1, "mode {}", mode.name());
    }
}

/// A detection and an embedding leave the upper halves of the vector registers clean
/// (`conv_kernels::clear_upper_vector_state`): tract's sigmoid left them dirty, and the
/// SSE code run after it on the same thread was up to twice as slow. Read from the CPU's
/// record of which register state is in use (`xgetbv` with ecx = 1), where it has one.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_detection_and_an_embedding_leave_the_vector_registers_clean() {
    /// Bits 2 (the upper halves of ymm0-15) and 6 (of zmm0-15) of XINUSE, or `None` where
    /// the CPU cannot tell.
    fn upper_halves_in_use() -> Option<u64> {
        use std::arch::x86_64::__cpuid_count;
        // CPUID leaf 0xD (XSAVE features) exists wherever AVX does.
        let xgetbv1 =
            std::arch::is_x86_feature_detected!("avx") && __cpuid_count(0xD, 1).eax & 4 != 0;
        if !xgetbv1 {
            return None;
        }
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV with ecx = 1 is supported (checked above); it only reads.
        unsafe {
            std::arch::asm!("xgetbv", in("ecx") 1, out("eax") lo, out("edx") hi,
                options(nomem, nostack, preserves_flags));
        }
        Some((u64::from(hi) << 32 | u64::from(lo)) & (1 << 2 | 1 << 6))
    }
    let photo = decode("group_1280x720.jpg");
    for _ in 0..2 {
        let faces = pipeline().detect(&photo, default_min_score()).unwrap();
        let Some(state) = upper_halves_in_use() else {
            return;
        };
        assert_eq!(state, 0, "after a detection: XINUSE {state:#b}");
        pipeline().embed(&photo, &faces[..1]).unwrap();
        let state = upper_halves_in_use().unwrap();
        assert_eq!(state, 0, "after an embedding: XINUSE {state:#b}");
    }
}
