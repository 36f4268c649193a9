//! The CLI checks settings before it touches the service; deepstackd checks them again at
//! start-up. The two lists are written twice (the CLI must not link the models), so this test
//! holds them together: same names in the same order, and the same verdict on every value.

use deepstack_cli::settings::{Settings, KEYS};

#[test]
fn the_cli_knows_exactly_the_daemons_settings_in_order() {
    let cli: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let daemon: Vec<&str> = deepstackd::config::setting_names().collect();
    assert_eq!(cli, daemon);
}

/// Whether deepstackd starts with `name=value` in its environment (x86: MODE allowed).
fn daemon_accepts(name: &str, value: &str) -> bool {
    let env = [(name.to_owned(), value.to_owned())];
    deepstackd::config::from_sources(Vec::<String>::new(), env).is_ok()
}

fn cli_accepts(name: &str, value: &str) -> bool {
    Settings::validate(&[(name.to_owned(), value.to_owned())], "x86_64").is_ok()
}

#[test]
fn the_cli_and_the_daemon_accept_and_refuse_the_same_values() {
    let existing_dir = std::env::temp_dir();
    let existing_dir = existing_dir.to_str().unwrap();
    let values = [
        "0",
        "1",
        "63",
        "64",
        "65535",
        "65536",
        "100000",
        "100001",
        "1000000",
        "1000001",
        "16777216",
        "16777217",
        "4294967295",
        "4294967296",
        "-1",
        "1.5",
        "0.001",
        "abc",
        "True",
        "False",
        "true",
        "High",
        "Medium",
        "Low",
        "low",
        "127.0.0.1",
        "::1",
        "localhost",
        existing_dir,
        "/no/such/dir/for/deepstack",
        "relative/dir",
    ];
    // Where the CLI is stricter on purpose. VISION-FACE: the daemon treats anything but
    // `True` as off, the CLI refuses misspellings. DATA_DIR: the service needs an absolute
    // path, a person running deepstackd by hand may use a relative one.
    const CLI_STRICTER: &[&str] = &["VISION-FACE", "DATA_DIR"];
    let mut disagreements = Vec::new();
    for key in KEYS {
        for value in values {
            let (cli, daemon) = (
                cli_accepts(key.name, value),
                daemon_accepts(key.name, value),
            );
            // Never: a service configured by the CLI that does not start.
            let broken_service = cli && !daemon;
            let differs = cli != daemon && !CLI_STRICTER.contains(&key.name);
            if broken_service || differs {
                disagreements.push(format!("{}={value}: cli {cli}, daemon {daemon}", key.name));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
