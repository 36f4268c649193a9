//! `GALLERY_URL`: what it may say, where its password comes from, and how it is shown (never
//! with the password).

use std::path::Path;
use std::time::Duration;

use postgres::config::Host;
use postgres::Config;

use super::tls::Tls;

/// How long connecting may take before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked `GALLERY_URL`.
#[derive(Clone)]
pub struct GalleryUrl {
    config: Config,
    tls: Tls,
    shown: String,
}

impl std::fmt::Debug for GalleryUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl GalleryUrl {
    /// Checks `url` (`postgresql://user@host:port/db?...`). The password may be in the URL
    /// (the env file is 0640) or, when it is not, in the file `PGPASSFILE` names, read as libpq
    /// reads it. Errors never repeat the URL: it may hold a password.
    pub fn parse(url: &str, passfile: Option<&Path>) -> Result<GalleryUrl, String> {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err("expected a postgresql://user@host:port/database URL".into());
        }
        let (tls, url) = Tls::from_url(url)?;
        let mut config: Config = url
            .parse()
            .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        let user = config
            .get_user()
            .ok_or("the URL names no user (postgresql://USER@host/database)")?
            .to_owned();
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let host = match config.get_hosts() {
            [Host::Tcp(host)] => host.clone(),
            [Host::Unix(path)] => path.display().to_string(),
            [] => return Err("the URL names no host".into()),
            _ => return Err("the URL names several hosts: give one".into()),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        config.ssl_mode(tls.ssl_mode());
        if config.get_password().is_none() {
            if let Some(file) = passfile {
                if let Some(password) = password_from_file(file, &host, port, &dbname, &user)? {
                    config.password(password);
                }
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A board cut off by a network fault notices within seconds, not TCP's minutes.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(10));
        config.application_name("deepstackd");
        let shown = format!("postgresql://{user}@{host}:{port}/{dbname}");
        Ok(GalleryUrl { config, tls, shown })
    }

    /// What to connect with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Opens a connection with these settings, over TLS when `sslmode` asks for it.
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.tls.connector {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }

    /// `postgresql://user@host:port/db`, for logs and messages: no password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// The password for (host, port, db, user) in a libpq password file (`host:port:db:user:pw`
/// lines, `*` matches anything, `\:` and `\\` are escapes; the first match wins). Like libpq,
/// a file others may read is refused.
fn password_from_file(
    file: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Result<Option<String>, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = file.display();
    let meta = std::fs::metadata(file).map_err(|e| format!("PGPASSFILE {shown}: {e}"))?;
    if meta.mode() & 0o007 != 0 {
        return Err(format!(
            "PGPASSFILE {shown} can be read by anybody: make it 0600 (or 0640 for a group)"
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("PGPASSFILE {shown}: {e}"))?;
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want)
        {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_their_password() {
        let url = GalleryUrl::parse("postgresql://ds:s3cret@db.lan:5433/faces", None).unwrap();
        assert_eq!(url.shown(), "postgresql://ds@db.lan:5433/faces");
        assert_eq!(format!("{url:?}"), "postgresql://ds@db.lan:5433/faces");
        assert_eq!(url.config().get_password(), Some(&b"s3cret"[..]));
        for bad in [
            "mysql://ds@db/faces",
            "postgresql://db.lan/faces",
            "postgresql://ds@a,b/faces",
            "postgresql://ds@db/faces?sslmode=sometimes",
            "postgresql://ds:s3cret@db/faces?nonsense=1",
        ] {
            let problem = GalleryUrl::parse(bad, None).unwrap_err();
            assert!(!problem.contains("s3cret"), "{problem}");
        }
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:no\ndb.lan:5432:faces:ds:pa\\:ss\n*:*:*:ds:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let url = GalleryUrl::parse("postgresql://ds@db.lan/faces", Some(&file)).unwrap();
        assert_eq!(url.config().get_password(), Some(&b"pa:ss"[..]));
        let url = GalleryUrl::parse("postgresql://ds@db.lan/other", Some(&file)).unwrap();
        assert_eq!(url.config().get_password(), Some(&b"fallback"[..]));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            GalleryUrl::parse("postgresql://ds@db.lan/faces", Some(&file))
                .unwrap_err()
                .contains("anybody")
        );
    }
}
