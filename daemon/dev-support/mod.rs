//! Helpers shared by the integration tests and the `deepstack-bench` binary, which cannot
//! link each other's code: both include this file with `#[path]`. Standard library only.

#![allow(dead_code)] // each includer uses part of it

pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `pip install --target <target> -r <requirements>` with `extra` pip flags, once: a stamp
/// holds the flags and requirements it was made from, and a finished install is renamed into
/// place, so an interrupted one is never used and a changed file reinstalls. Another process
/// installing the same requirements at the same time is fine (the first rename wins).
pub fn pip_install_once(
    requirements: &Path,
    target: &Path,
    extra: &[&str],
) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let wanted = format!("{}\n{text}", extra.join(" "));
    if std::fs::read_to_string(target.join(".stamp"))
        .ok()
        .as_deref()
        == Some(wanted.as_str())
    {
        return Ok(target.to_owned());
    }
    let tmp = target.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .args(["--disable-pip-version-check", "--root-user-action=ignore"])
        .args(extra)
        .arg("--target")
        .arg(&tmp)
        .arg("-r")
        .arg(requirements)
        .output()
        .map_err(|e| format!("cannot run pip (is python3 with pip installed?): {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "pip install of {} failed:\n{}",
            requirements.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(tmp.join(".stamp"), &wanted).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(target);
    if std::fs::rename(&tmp, target).is_err() {
        // Another process won the race with the same requirements.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(target.to_owned())
}

/// The body of an HTTP/1.1 `Transfer-Encoding: chunked` response, or `None` if malformed.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
