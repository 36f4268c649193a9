//! The `deepstack` binary against a temporary config directory and recording stand-ins for
//! systemctl and journalctl: no root, no systemd needed.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output};

use deepstack_cli::env_file;

/// A temporary machine: the env file's directory, the stand-ins and what they recorded.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let m = Machine {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(m.etc()).unwrap();
        m.stand_in("systemctl", 0, "");
        m.stand_in("journalctl", 0, "");
        m
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn env_file(&self) -> PathBuf {
        self.etc().join("deepstack.env")
    }

    /// The drop-in giving deepstack.socket its address.
    fn socket_dropin(&self) -> PathBuf {
        self.dir
            .path()
            .join("systemd/deepstack.socket.d/listen.conf")
    }

    /// The service's drop-in that gives it the network for a shared gallery.
    fn network_dropin(&self) -> PathBuf {
        self.dir
            .path()
            .join("systemd/deepstack.service.d/gallery-network.conf")
    }

    /// The address the socket's drop-in sets.
    fn socket_address(&self) -> String {
        let text = fs::read_to_string(self.socket_dropin()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&"ListenStream="),
            "the default is reset: {text}"
        );
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("ListenStream="))
            .unwrap_or_default()
            .to_owned()
    }

    fn record(&self, tool: &str) -> PathBuf {
        self.dir.path().join(format!("{tool}.calls"))
    }

    /// What `systemctl show` prints.
    fn show(&self, text: &str) {
        fs::write(self.dir.path().join("show"), text).unwrap();
    }

    /// A script that appends its arguments to `<tool>.calls`, prints the `show` file for
    /// `show`, writes `stderr` and exits with `code`.
    fn stand_in(&self, tool: &str, code: i32, stderr: &str) {
        let path = self.dir.path().join(tool);
        let script = format!(
            "#!/bin/sh\necho \"$*\" >> '{record}'\n\
             if [ \"$1\" = show ]; then cat '{show}' 2>/dev/null; fi\n\
             [ -n '{stderr}' ] && echo '{stderr}' >&2\nexit {code}\n",
            record = self.record(tool).display(),
            show = self.dir.path().join("show").display(),
        );
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The calls a stand-in received, one line each.
    fn calls(&self, tool: &str) -> Vec<String> {
        fs::read_to_string(self.record(tool))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `deepstack args...` as root on x86_64, with no `deepstack` group.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deepstack"));
        c.args(args)
            .env("DEEPSTACK_ENV_FILE", self.env_file())
            .env("DEEPSTACK_SOCKET_DROPIN", self.socket_dropin())
            .env("DEEPSTACK_NETWORK_DROPIN", self.network_dropin())
            .env("DEEPSTACK_SYSTEMCTL", self.dir.path().join("systemctl"))
            .env("DEEPSTACK_JOURNALCTL", self.dir.path().join("journalctl"))
            .env("DEEPSTACK_ARCH", "x86_64")
            .env("DEEPSTACK_EUID", "0")
            .env("DEEPSTACK_GROUP", "no-such-group-for-deepstack-tests");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        Run(self.command(args).output().unwrap())
    }

    fn run_with(&self, args: &[&str], var: &str, value: &str) -> Run {
        Run(self.command(args).env(var, value).output().unwrap())
    }

    /// Files of the env file's directory other than the env file (temporary files).
    fn leftovers(&self) -> Vec<String> {
        fs::read_dir(self.etc())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "deepstack.env")
            .collect()
    }

    /// The settings written, as deepstackd will read them.
    fn written(&self) -> Vec<(String, String)> {
        let text = fs::read_to_string(self.env_file()).unwrap();
        env_file::parse(&text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }
}

struct Run(Output);

impl Run {
    fn code(&self) -> i32 {
        self.0.status.code().expect("exited")
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    #[track_caller]
    fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A start that moves the socket: systemd rereads the drop-in, socket and service restart in
/// one transaction.
const SYSTEMCTL_START: [&str; 3] = [
    "enable --quiet deepstack.socket deepstack.service",
    "daemon-reload",
    "restart deepstack.socket deepstack.service",
];

#[test]
fn start_takes_deepstacks_quoted_argument() {
    let m = Machine::new();
    let run = m.run(&["start", "VISION-FACE=True PORT=8080 API-KEY=mysecretkey"]);
    run.expect(0);
    assert_eq!(
        m.written(),
        pairs(&[
            ("VISION-FACE", "True"),
            ("API-KEY", "mysecretkey"),
            ("PORT", "8080"),
            ("DATA_DIR", "/var/lib/deepstack"),
        ])
    );
    assert_eq!(m.calls("systemctl"), SYSTEMCTL_START);
    assert_eq!(m.socket_address(), "0.0.0.0:8080");
    assert!(run.stdout().contains("port 8080"), "{}", run.stdout());
    assert!(!run.stdout().contains("mysecretkey") && !run.stderr().contains("mysecretkey"));
}

#[test]
fn a_shared_gallery_gets_the_network_and_loses_it_with_gallery_url() {
    let m = Machine::new();
    let url = "postgresql://deepstack:pw@db.lan:5432/gallery";
    let run = m.run(&["start", &format!("VISION-FACE=True GALLERY_URL={url}")]);
    run.expect(0);
    let text = fs::read_to_string(m.network_dropin()).expect("the network drop-in");
    assert!(text.contains("PrivateNetwork=no"), "{text}");
    assert_eq!(m.calls("systemctl"), SYSTEMCTL_START);
    // The URL holds a password: never shown.
    assert!(!run.stdout().contains("pw@") && !run.stderr().contains("pw@"));

    // The same address again, GALLERY_URL gone: the drop-in goes and systemd rereads units.
    m.run(&["start", "VISION-FACE=True"]).expect(0);
    assert!(!m.network_dropin().exists());
    let calls = m.calls("systemctl");
    assert_eq!(
        calls[calls.len() - 4..],
        [
            "enable --quiet deepstack.socket deepstack.service",
            "daemon-reload",
            "start deepstack.socket",
            "restart deepstack.service",
        ]
    );
    // Not a PostgreSQL URL: refused before anything changes (exit 3, a bad value).
    m.run(&["start", "VISION-FACE=True GALLERY_URL=mysql://x@y/z"])
        .expect(3);
    assert!(!m.network_dropin().exists());
}

#[test]
fn start_takes_separate_arguments_and_aliases() {
    let quoted = Machine::new();
    quoted
        .run(&["start", "VISION-FACE=True THREADCOUNT=2 ADMIN-KEY=a"])
        .expect(0);
    let separate = Machine::new();
    separate
        .run(&["start", "VISION_FACE=True", "THREADCOUNT=2", "ADMIN_KEY=a"])
        .expect(0);
    assert_eq!(quoted.written(), separate.written());
    // DeepStack's Pi CLI served on 80.
    assert!(separate.written().contains(&("PORT".into(), "80".into())));
}

#[test]
fn a_key_with_spaces_survives_as_a_separate_argument() {
    let m = Machine::new();
    m.run(&["start", "VISION-FACE=True", "API-KEY= two words \""])
        .expect(0);
    assert!(m
        .written()
        .contains(&("API-KEY".into(), " two words \"".into())));
}

#[test]
fn starting_again_replaces_the_settings() {
    let m = Machine::new();
    m.run(&["start", "VISION-FACE=True API-KEY=old PORT=81"])
        .expect(0);
    m.run(&["start", "VISION-FACE=True"]).expect(0);
    let written = m.written();
    assert!(!written.iter().any(|(k, _)| k == "API-KEY"), "{written:?}");
    assert!(written.contains(&("PORT".into(), "80".into())));
    assert_eq!(m.calls("systemctl")[3..], SYSTEMCTL_START, "the port moved");
    assert_eq!(m.socket_address(), "0.0.0.0:80");

    // The same address again: the socket stays open, only the service restarts.
    m.run(&["start", "VISION-FACE=True API-KEY=new BIND=127.0.0.1"])
        .expect(0);
    m.run(&["start", "VISION-FACE=True API-KEY=newer BIND=127.0.0.1"])
        .expect(0);
    assert_eq!(m.socket_address(), "127.0.0.1:80");
    assert_eq!(
        m.calls("systemctl")[9..],
        [
            "enable --quiet deepstack.socket deepstack.service",
            "start deepstack.socket",
            "restart deepstack.service"
        ]
    );
}

#[test]
fn env_file_is_private_and_replaced_atomically() {
    let m = Machine::new();
    fs::write(m.env_file(), "PORT=1\n").unwrap();
    fs::set_permissions(m.env_file(), fs::Permissions::from_mode(0o644)).unwrap();
    m.run(&["start", "VISION-FACE=True API-KEY=k"]).expect(0);
    let meta = fs::metadata(m.env_file()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "no deepstack group: owner only");
    assert!(m.leftovers().is_empty(), "{:?}", m.leftovers());
}

#[test]
fn env_file_is_readable_by_the_service_group() {
    // Any group other than root shows that the file is handed to it; only root may.
    let Ok(Some(group)) = nix::unistd::Group::from_name("nogroup") else {
        eprintln!("no group `nogroup` here: skipped");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: skipped");
        return;
    }
    let m = Machine::new();
    m.run_with(&["start", "VISION-FACE=True"], "DEEPSTACK_GROUP", "nogroup")
        .expect(0);
    let meta = fs::metadata(m.env_file()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), group.gid.as_raw());
    assert!(m.leftovers().is_empty());
}

#[test]
fn a_missing_directory_is_created() {
    let m = Machine::new();
    let nested = m.dir.path().join("new/dir/deepstack.env");
    let run = m.run_with(
        &["start", "VISION-FACE=True"],
        "DEEPSTACK_ENV_FILE",
        nested.to_str().unwrap(),
    );
    run.expect(0);
    assert!(nested.is_file());
}

#[test]
fn a_failed_write_leaves_no_temporary_file() {
    let m = Machine::new();
    // A directory where the file should be: the rename fails.
    fs::create_dir(m.env_file()).unwrap();
    let run = m.run(&["start", "VISION-FACE=True"]);
    run.expect(1);
    assert!(run.stderr().contains("cannot write"), "{}", run.stderr());
    assert!(m.leftovers().is_empty(), "{:?}", m.leftovers());
    assert!(m.calls("systemctl").is_empty());
}

#[test]
fn unknown_keys_are_refused_with_the_valid_list() {
    let m = Machine::new();
    fs::write(m.env_file(), "VISION-FACE=True\nPORT=9000\n").unwrap();
    let before = fs::read(m.env_file()).unwrap();
    let run = m.run(&["start", "VISION-FACE=True COLOR=blue"]);
    run.expect(3);
    let err = run.stderr();
    assert!(err.contains("unknown setting \"COLOR\""), "{err}");
    for name in [
        "VISION-FACE",
        "MODE",
        "API-KEY",
        "ADMIN-KEY",
        "PORT",
        "THREADCOUNT",
        "TIMEOUT",
        "DATA_DIR",
    ] {
        assert!(err.contains(name), "{name} missing from {err}");
    }
    assert_eq!(fs::read(m.env_file()).unwrap(), before, "old file intact");
    assert!(m.calls("systemctl").is_empty(), "service untouched");
    assert!(m.leftovers().is_empty());

    let run = m.run(&["start", "vision-face=True"]);
    run.expect(3);
    assert!(
        run.stderr().contains("did you mean VISION-FACE?"),
        "{}",
        run.stderr()
    );
    let run = m.run(&["start", "VISION-FACE=True VISION-DETECTION=True"]);
    run.expect(3);
    assert!(run.stderr().contains("face API only"), "{}", run.stderr());
}

#[test]
fn every_bad_value_is_named_at_once() {
    let m = Machine::new();
    let bad = [
        "PORT=0",
        "THREADCOUNT=999",
        "TIMEOUT=-1",
        "MODE=Turbo",
        "BIND=localhost",
        "DATA_DIR=relative/dir",
        "MODELS_DIR=/nonexistent/models",
        "MAX_PIXELS=0",
        "MAX_UPLOAD_BYTES=1MB",
    ];
    let mut args = vec!["start", "VISION-FACE=true"];
    args.extend(bad);
    let run = m.run(&args);
    run.expect(3);
    let err = run.stderr();
    assert!(err.contains("10 problems"), "{err}");
    assert!(
        err.contains("VISION-FACE: expected exactly True or False, got \"true\""),
        "{err}"
    );
    for pair in bad {
        let (key, value) = pair.split_once('=').unwrap();
        assert!(err.contains(&format!("{key}: expected")), "{key} in {err}");
        assert!(
            err.contains(&format!("got \"{value}\"")),
            "{value} in {err}"
        );
    }
    assert!(!m.env_file().exists());
    assert!(m.calls("systemctl").is_empty());

    // Not a pair at all, and one setting given twice.
    m.run(&["start", "VISION-FACE=True PORT"]).expect(3);
    let run = m.run(&["start", "PORT=1 PORT=2"]);
    run.expect(3);
    assert!(
        run.stderr().contains("PORT is given twice"),
        "{}",
        run.stderr()
    );
    m.run(&["start", "PORT=2 PORT=2"]).expect(0);
}

#[test]
fn a_bad_key_is_refused_without_being_shown() {
    let m = Machine::new();
    let run = m.run(&["start", "VISION-FACE=True", "API-KEY=sec\tret"]);
    run.expect(3);
    assert!(
        run.stderr().contains("API-KEY: expected"),
        "{}",
        run.stderr()
    );
    assert!(!run.stderr().contains("sec"), "{}", run.stderr());
}

#[test]
fn start_without_settings_is_a_usage_error() {
    Machine::new().run(&["start"]).expect(2);
    Machine::new().run(&["frobnicate"]).expect(2);
}

#[test]
fn mode_is_refused_on_arm_in_deepstacks_words() {
    for arch in ["aarch64", "arm"] {
        let m = Machine::new();
        let run = m.run_with(
            &["start", "VISION-FACE=True MODE=High"],
            "DEEPSTACK_ARCH",
            arch,
        );
        run.expect(3);
        let err = run.stderr();
        assert!(
            err.contains("Speed Modes are not available on the Raspberry PI Version"),
            "{err}"
        );
        assert!(err.contains("fixed") && err.contains("Low"), "{err}");
        assert!(!m.env_file().exists());
        m.run_with(&["start", "VISION-FACE=True"], "DEEPSTACK_ARCH", arch)
            .expect(0);
        let run = m.run_with(&["config"], "DEEPSTACK_ARCH", arch);
        run.expect(0);
        assert!(run.stdout().contains("fixed on ARM"), "{}", run.stdout());
    }
    // MODE is fine elsewhere.
    Machine::new()
        .run(&["start", "VISION-FACE=True MODE=Low"])
        .expect(0);
}

#[test]
fn commands_that_change_the_service_need_root() {
    let m = Machine::new();
    for (args, shown) in [
        (
            &["start", "VISION-FACE=True"][..],
            "sudo deepstack start \"VISION-FACE=True\"",
        ),
        (
            &["start", "VISION-FACE=True API-KEY=k"][..],
            "sudo deepstack start \"...\"",
        ),
        (&["stop"][..], "sudo deepstack stop"),
        (&["restart"][..], "sudo deepstack restart"),
    ] {
        let run = m.run_with(args, "DEEPSTACK_EUID", "1000");
        run.expect(4);
        assert!(run.stderr().contains("needs root"), "{}", run.stderr());
        assert!(run.stderr().contains(shown), "{}", run.stderr());
    }
    assert!(!m.env_file().exists());
    assert!(m.calls("systemctl").is_empty());
    // Validation comes first: a bad setting is reported even without sudo.
    m.run_with(&["start", "PORT=x"], "DEEPSTACK_EUID", "1000")
        .expect(3);
}

#[test]
fn config_masks_the_keys() {
    let m = Machine::new();
    fs::write(
        m.env_file(),
        "# hand-edited\nVISION-FACE=True\nAPI-KEY=\"s3cret-api\"\nADMIN_KEY=t0p-admin\nPORT=8080\nCOLOR=blue\n",
    )
    .unwrap();
    let run = m.run(&["config"]);
    run.expect(0);
    let out = run.stdout();
    assert!(!out.contains("s3cret") && !out.contains("t0p"), "{out}");
    assert_eq!(out.matches(env_file::MASK).count(), 2, "{out}");
    assert!(out.contains("8080"), "{out}");
    assert!(
        out.contains("TIMEOUT") && out.contains("(default)"),
        "{out}"
    );
    assert!(out.contains("COLOR") && out.contains("ignored"), "{out}");

    fs::write(m.env_file(), "API-KEY=\n").unwrap();
    let out = m.run(&["config"]).expect(0).stdout();
    assert!(out.contains("no key required"), "{out}");

    fs::write(m.env_file(), "PORT=eighty\nAPI-KEY=s3cret\n").unwrap();
    let run = m.run(&["config"]);
    run.expect(3);
    assert!(run.stderr().contains("PORT: expected"), "{}", run.stderr());
    assert!(!run.stdout().contains("s3cret"));

    fs::write(m.env_file(), "not a pair\n").unwrap();
    m.run(&["config"]).expect(3);
    fs::remove_file(m.env_file()).unwrap();
    let run = m.run(&["config"]);
    run.expect(1);
    assert!(run.stderr().contains("deepstack start"), "{}", run.stderr());
}

#[test]
fn restart_checks_the_saved_settings_first() {
    let m = Machine::new();
    let run = m.run(&["restart"]);
    run.expect(1);
    assert!(run.stderr().contains("does not exist"), "{}", run.stderr());

    fs::write(m.env_file(), "VISION-FACE=True\nMODE=High\n").unwrap();
    let run = m.run_with(&["restart"], "DEEPSTACK_ARCH", "aarch64");
    run.expect(3);
    assert!(run.stderr().contains("Speed Modes"), "{}", run.stderr());
    assert!(m.calls("systemctl").is_empty());

    m.run(&["restart"]).expect(0);
    assert_eq!(
        m.calls("systemctl"),
        [
            "daemon-reload",
            "restart deepstack.socket deepstack.service"
        ],
        "no drop-in yet (an upgrade from a version without the socket): written, socket moved"
    );
    assert_eq!(
        m.socket_address(),
        "0.0.0.0:5000",
        "deepstackd's own default port"
    );
    m.run(&["restart"]).expect(0);
    assert_eq!(
        m.calls("systemctl")[2..],
        ["start deepstack.socket", "restart deepstack.service"],
        "the socket stays open: connections wait in its queue during the restart"
    );
}

#[test]
fn stop_stops_and_disables() {
    let m = Machine::new();
    m.run(&["stop"]).expect(0);
    assert_eq!(
        m.calls("systemctl"),
        [
            "stop deepstack.socket deepstack.service",
            "disable --quiet deepstack.socket deepstack.service"
        ]
    );
}

#[test]
fn a_failing_systemctl_is_reported() {
    let m = Machine::new();
    m.stand_in("systemctl", 1, "Job for deepstack.service failed.");
    let run = m.run(&["start", "VISION-FACE=True"]);
    run.expect(1);
    assert!(
        run.stderr().contains("Job for deepstack.service failed"),
        "{}",
        run.stderr()
    );
    // The settings were saved before: `deepstack restart` retries with them.
    assert!(run.stdout().contains("settings saved"), "{}", run.stdout());
    assert!(m.env_file().exists());

    let m = Machine::new();
    let missing = m.dir.path().join("no-systemctl");
    let run = m.run_with(&["stop"], "DEEPSTACK_SYSTEMCTL", missing.to_str().unwrap());
    run.expect(1);
    assert!(run.stderr().contains("cannot run"), "{}", run.stderr());
}

#[test]
fn logs_follow_the_journal() {
    let m = Machine::new();
    m.run(&["logs"]).expect(0);
    m.run(&["logs", "--no-follow", "-n", "50"]).expect(0);
    assert_eq!(
        m.calls("journalctl"),
        [
            "--unit deepstack.service --follow",
            "--unit deepstack.service --lines 50"
        ]
    );
}

/// Serves one canned answer to one connection; returns the port.
fn serve_once(answer: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // The request may arrive in several pieces: read up to the blank line.
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
        }
        assert!(request.starts_with(b"GET /v1/status HTTP/1.0\r\n"));
        stream.write_all(answer.as_bytes()).unwrap();
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn status_shows_the_service_and_the_api() {
    let m = Machine::new();
    m.show("ActiveState=active\nSubState=running\nUnitFileState=enabled\nStatusText=ready: 3 users\nActiveEnterTimestamp=Mon 2024-01-01 10:00:00 UTC\n");
    let port = serve_once(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"version\":\"0.1.0\",\"mode\":\"Medium\",\"users\":3,\"samples\":7}",
    );
    fs::write(m.env_file(), format!("VISION-FACE=True\nPORT={port}\n")).unwrap();
    let run = m.run(&["status"]);
    run.expect(0);
    let out = run.stdout();
    assert!(
        out.contains("active (running)") && out.contains("enabled at boot"),
        "{out}"
    );
    assert!(out.contains("ready: 3 users"), "{out}");
    assert!(
        out.contains("HTTP 200") && out.contains("0.1.0") && out.contains("samples"),
        "{out}"
    );
    assert!(m.calls("systemctl")[0].starts_with("show deepstack.service --property"));
}

#[test]
fn status_exit_codes() {
    let m = Machine::new();
    fs::write(m.env_file(), format!("PORT={}\n", closed_port())).unwrap();
    m.show("ActiveState=activating\nSubState=start\n");
    let run = m.run(&["status"]);
    run.expect(6);
    assert!(run.stdout().contains("no answer"), "{}", run.stdout());
    m.show("ActiveState=failed\nSubState=failed\nResult=exit-code\n");
    let run = m.run(&["status"]);
    run.expect(5);
    assert!(run.stdout().contains("exit-code"), "{}", run.stdout());
    // No systemd at all (a container): the API alone decides.
    let missing = m.dir.path().join("no-systemctl");
    m.run_with(
        &["status"],
        "DEEPSTACK_SYSTEMCTL",
        missing.to_str().unwrap(),
    )
    .expect(5);
}

#[test]
fn help_has_examples_exit_codes_and_settings() {
    let m = Machine::new();
    let out = m.run(&["--help"]).expect(0).stdout();
    for text in [
        "Examples:",
        "sudo deepstack start \"VISION-FACE=True\"",
        "Exit codes:",
        "4  needs root",
    ] {
        assert!(out.contains(text), "{text} in {out}");
    }
    let out = m.run(&["start", "--help"]).expect(0).stdout();
    for key in deepstack_cli::settings::KEYS {
        assert!(out.contains(key.name), "{} in {out}", key.name);
    }
    assert!(out.contains("Speed Modes are not available on the Raspberry PI Version"));
    let out = m.run(&["--version"]).expect(0).stdout();
    assert_eq!(
        out.trim(),
        format!("deepstack {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn written_file_is_what_the_daemon_parses() {
    // The header is comments only; values round-trip through the daemon's rules.
    let m = Machine::new();
    m.run(&[
        "start",
        "VISION-FACE=True",
        "API-KEY='quoted'",
        "TIMEOUT=2.5",
    ])
    .expect(0);
    let text = fs::read_to_string(m.env_file()).unwrap();
    assert!(
        text.lines().all(|l| l.starts_with('#') || l.contains('=')),
        "{text}"
    );
    assert!(m.written().contains(&("API-KEY".into(), "'quoted'".into())));
    assert!(m.written().contains(&("TIMEOUT".into(), "2.5".into())));
}
