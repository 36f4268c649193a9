//! The env file deepstackd reads (`--env-file`): reading it back, writing it atomically with
//! permissions that keep the keys secret, and masking the keys for display.
//!
//! The format is deepstackd's: `KEY=VALUE` lines, `#` comments, blank lines; the line and the
//! value are trimmed and one pair of surrounding quotes is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::settings::Settings;

/// Where the packaged service reads its settings.
pub const DEFAULT_PATH: &str = "/etc/deepstack/deepstack.env";
/// What a key is shown as.
pub const MASK: &str = "********";

/// One `KEY=VALUE` line read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The name as written.
    pub key: String,
    /// The value, trimmed and unquoted as deepstackd does.
    pub value: String,
}

/// A line that is neither `KEY=VALUE`, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
}

/// Parses an env file's text the way deepstackd does.
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(SyntaxError { line: i + 1 })?;
        out.push(Entry {
            line: i + 1,
            key: key.trim().to_owned(),
            value: unquote(value.trim()).to_owned(),
        });
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// A value as written to the file: quoted when deepstackd's trimming or unquoting would
/// change it (the outer quotes are the only ones it removes, so inner ones need no escape).
fn quote(value: &str) -> String {
    if value.trim() != value || unquote(value) != value {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    }
}

/// The file `deepstack start` writes for these settings.
pub fn render(settings: &Settings) -> String {
    let mut out = String::from(
        "# Written by `deepstack start`, which replaces this file each time it runs.\n\
         # Read by deepstackd (deepstack.service). Lines are KEY=VALUE; see `deepstack --help`.\n",
    );
    for (key, value) in settings.iter() {
        out.push_str(&format!("{}={}\n", key.name, quote(value)));
    }
    out
}

/// Who may read the file besides its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Mode 0640 with this group (the service's group, so deepstackd can read it).
    Group(u32),
    /// Mode 0600: the owner alone.
    OwnerOnly,
    /// Mode 0644: anyone (files that hold no secret, such as the socket's drop-in).
    Everyone,
}

impl Readers {
    /// The file mode.
    pub fn mode(self) -> u32 {
        match self {
            Readers::Group(_) => 0o640,
            Readers::OwnerOnly => 0o600,
            Readers::Everyone => 0o644,
        }
    }
}

/// Replaces `path` with `contents` so that a reader sees the old file or the new one, never
/// a part: a temporary file in the same directory, created unreadable by others, written and
/// synced, then renamed over `path`, and the directory synced. On failure the old file is
/// untouched and the temporary file removed.
pub fn write_atomic(path: &Path, contents: &str, readers: Readers) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_then_rename(&tmp, path, contents, readers);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    File::open(&dir)?.sync_all()
}

fn write_then_rename(tmp: &Path, path: &Path, contents: &str, readers: Readers) -> io::Result<()> {
    // create_new: never follow a link or reuse a file someone else placed there.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    if let Readers::Group(gid) = readers {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    file.set_permissions(fs::Permissions::from_mode(readers.mode()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

/// How a value is shown: keys masked, an empty key said to be off.
pub fn display_value(secret: bool, value: &str) -> String {
    match (secret, value.is_empty()) {
        (true, true) => "(empty: no key required)".to_owned(),
        (true, false) => MASK.to_owned(),
        (false, _) => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_the_daemon() {
        let entries = parse("# c\n\n  PORT = 80 \nAPI-KEY=\"a b\"\nX='y'\n").unwrap();
        let kv: Vec<_> = entries
            .iter()
            .map(|e| (e.line, e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            kv,
            [(3, "PORT", "80"), (4, "API-KEY", "a b"), (5, "X", "y")]
        );
        assert_eq!(parse("PORT=1\nnope\n"), Err(SyntaxError { line: 2 }));
    }

    #[test]
    fn quoting_round_trips() {
        for value in [
            "plain",
            " padded ",
            "\"quoted\"",
            "'single'",
            "a\"b",
            "",
            "#x",
        ] {
            let text = format!("K={}\n", quote(value));
            assert_eq!(parse(&text).unwrap()[0].value, value, "{text}");
        }
        assert_eq!(quote("plain"), "plain");
    }

    #[test]
    fn masks() {
        assert_eq!(display_value(true, "s3cret"), MASK);
        assert!(display_value(true, "").contains("no key"));
        assert_eq!(display_value(false, "80"), "80");
    }
}
