//! Who runs the command, and who may read the env file.

use crate::env_file::Readers;
use crate::error::Error;

/// The group the service runs as; the env file is readable by it.
pub const SERVICE_GROUP: &str = "deepstack";

/// The effective user id: `injected` (tests) or the process's.
pub fn effective_uid(injected: Option<u32>) -> u32 {
    injected.unwrap_or_else(|| nix::unistd::geteuid().as_raw())
}

/// What to tell someone who ran `command_line` without root.
pub fn needs_root_message(command_line: &str) -> String {
    format!(
        "`deepstack {command_line}` changes the system service and needs root: run \
         `sudo deepstack {command_line}`"
    )
}

/// Fails with [`needs_root_message`] unless `uid` is root.
pub fn require_root(uid: u32, command_line: &str) -> Result<(), Error> {
    if uid == 0 {
        Ok(())
    } else {
        Err(Error::NeedsRoot(needs_root_message(command_line)))
    }
}

/// Mode 0640 with group `group` when it exists (installed by the package), else 0600.
pub fn env_file_readers(group: &str) -> Readers {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Readers::Group(g.gid.as_raw()),
        _ => Readers::OwnerOnly,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_check() {
        assert!(require_root(0, "stop").is_ok());
        let e = require_root(1000, "start \"VISION-FACE=True\"").unwrap_err();
        assert_eq!(e.exit(), crate::error::Exit::NeedsRoot);
        assert!(e
            .to_string()
            .contains("sudo deepstack start \"VISION-FACE=True\""));
    }

    #[test]
    fn readers_fall_back_to_owner_only() {
        assert_eq!(env_file_readers("no-such-group-here"), Readers::OwnerOnly);
        assert_eq!(env_file_readers("root"), Readers::Group(0));
    }
}
