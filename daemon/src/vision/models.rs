//! The two ONNX models, embedded in the binary (rebuilt by `models-int8/build.py`).
//!
//! An optional directory may override them (same file names), for trying a rebuilt model
//! without recompiling. Whatever is loaded is identified by its sha256, which the status
//! endpoint and the gallery's samples record.

use std::path::Path;

use sha2::{Digest, Sha256};

/// File name of the YuNet detector, in `models-int8/` and in an override directory.
pub const DETECTOR_FILE: &str = "yunet_2023mar_int8.onnx";
/// File name of the SFace recognizer, in `models-int8/` and in an override directory.
pub const RECOGNIZER_FILE: &str = "sface_2021dec_int8.onnx";

static DETECTOR_BYTES: &[u8] = include_bytes!("../../../models-int8/yunet_2023mar_int8.onnx");
static RECOGNIZER_BYTES: &[u8] = include_bytes!("../../../models-int8/sface_2021dec_int8.onnx");

/// The committed checksum file, so the binary can tell whether it runs the shipped models.
pub const SHIPPED_SHA256SUMS: &str = include_str!("../../../models-int8/SHA256SUMS");

/// One model's bytes and where they came from.
#[derive(Clone)]
pub struct ModelFile {
    /// File name (as in `models-int8/`).
    pub name: &'static str,
    /// The ONNX protobuf.
    pub bytes: std::borrow::Cow<'static, [u8]>,
    /// Lower-case hex sha256 of `bytes`.
    pub sha256: String,
    /// `embedded` or the path it was read from.
    pub origin: String,
}

impl std::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile")
            .field("name", &self.name)
            .field("bytes", &self.bytes.len())
            .field("sha256", &self.sha256)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The detector and recognizer files the pipeline loads.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// YuNet.
    pub detector: ModelFile,
    /// SFace.
    pub recognizer: ModelFile,
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes of the model files compiled into the binary.
pub fn embedded_bytes() -> [&'static [u8]; 2] {
    [DETECTOR_BYTES, RECOGNIZER_BYTES]
}

impl ModelFiles {
    /// The models compiled into the binary.
    pub fn embedded() -> Self {
        let file = |name, bytes: &'static [u8]| ModelFile {
            name,
            sha256: sha256_hex(bytes),
            bytes: bytes.into(),
            origin: "embedded".into(),
        };
        ModelFiles {
            detector: file(DETECTOR_FILE, DETECTOR_BYTES),
            recognizer: file(RECOGNIZER_FILE, RECOGNIZER_BYTES),
        }
    }

    /// The embedded models, each replaced by the file of the same name in `dir` if present.
    pub fn with_override_dir(dir: &Path) -> std::io::Result<Self> {
        let mut files = Self::embedded();
        for file in [&mut files.detector, &mut files.recognizer] {
            let path = dir.join(file.name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    file.sha256 = sha256_hex(&bytes);
                    file.bytes = bytes.into();
                    file.origin = path.display().to_string();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ))
                }
            }
        }
        Ok(files)
    }
}

/// The sha256 that `SHA256SUMS` lists for `name`, if any.
pub fn shipped_sha256(name: &str) -> Option<&'static str> {
    SHIPPED_SHA256SUMS.lines().find_map(|line| {
        let (sum, file) = line.split_once("  ")?;
        (file.trim() == name).then_some(sum)
    })
}
