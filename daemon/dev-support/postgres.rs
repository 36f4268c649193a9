//! A throwaway PostgreSQL cluster from Debian's `postgresql` package: `initdb` and `pg_ctl`
//! in a temp dir, on a free loopback port, as the package's `postgres` user when we are root
//! (initdb refuses root), stopped and removed on drop. Used by the tests and the bench.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    options: Vec<String>,
}

/// The server certificate and key a cluster serves TLS with.
pub struct ServerCert<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Postgres {
    /// A cluster without TLS, which does not wait for the disk (`fsync=off`: tests only).
    pub fn start() -> Result<Postgres, String> {
        Postgres::start_with(None)
    }

    /// A cluster that also accepts TLS with `cert` (plain connections stay allowed), with
    /// `fsync=off`.
    pub fn start_with(cert: Option<ServerCert>) -> Result<Postgres, String> {
        Postgres::start_configured(cert, false)
    }

    /// A cluster as installed (`fsync` and `synchronous_commit` on): a commit waits for the
    /// disk, as an SQLite one does. What the bench compares SQLite against.
    pub fn start_durable() -> Result<Postgres, String> {
        Postgres::start_configured(None, true)
    }

    fn start_configured(cert: Option<ServerCert>, durable: bool) -> Result<Postgres, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|dirs| {
                dirs.flatten()
                    .map(|d| d.path().join("bin"))
                    .find(|bin| bin.join("initdb").is_file())
            })
            .ok_or(
                "PostgreSQL's server programs are missing: apt-get install postgresql \
                 (.ci/run installs it)",
            )?;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            probe.local_addr().map_err(|e| e.to_string())?.port()
        };
        let dir = std::env::temp_dir().join(format!("deepstack-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut pg = Postgres {
            bin,
            dir,
            port,
            options: vec![format!("-p {port}"), "-c listen_addresses=127.0.0.1".into()],
        };
        if !durable {
            pg.options.push("-c fsync=off".into());
        }
        pg.options.push(format!("-k {}", pg.dir.display()));
        if let Some(cert) = cert {
            use std::os::unix::fs::PermissionsExt;
            for (from, to) in [(cert.cert, "server.crt"), (cert.key, "server.key")] {
                let to = pg.dir.join(to);
                std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| e.to_string())?;
            }
            pg.options.push("-c ssl=on".into());
            pg.options
                .push(format!("-c ssl_cert_file={}/server.crt", pg.dir.display()));
            pg.options
                .push(format!("-c ssl_key_file={}/server.key", pg.dir.display()));
        }
        if is_root() {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .map_err(|e| e.to_string())?;
            if !chown.success() {
                return Err("chown to postgres failed".into());
            }
        }
        let data = pg.data();
        let args = ["-D", &data, "-U", "deepstack", "-A", "trust", "--no-sync"];
        if !pg.run("initdb", &args) {
            return Err(format!("initdb failed:\n{}", pg.logs()));
        }
        pg.ctl_start()?;
        Ok(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of its `postgres` database, as the superuser `deepstack` (trust: no password).
    pub fn url(&self) -> String {
        format!("postgresql://deepstack@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&str]) -> bool {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&path);
            cmd
        } else {
            Command::new(&path)
        };
        let Ok(log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tool.log"))
        else {
            return false;
        };
        let Ok(log2) = log.try_clone() else {
            return false;
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn ctl_start(&self) -> Result<(), String> {
        let options = self.options.join(" ");
        let log = self.dir.join("server.log").display().to_string();
        let data = self.data();
        let args = ["-D", &data, "-o", &options, "-l", &log, "-w", "start"];
        if self.run("pg_ctl", &args) {
            Ok(())
        } else {
            Err(format!("pg_ctl start failed:\n{}", self.logs()))
        }
    }

    pub fn ctl_stop(&self) -> Result<(), String> {
        if self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]) {
            Ok(())
        } else {
            Err(format!("pg_ctl stop failed:\n{}", self.logs()))
        }
    }

    pub fn logs(&self) -> String {
        ["tool.log", "server.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
