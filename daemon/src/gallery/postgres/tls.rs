//! TLS to PostgreSQL: `GALLERY_URL`'s `sslmode` and `sslrootcert`, as libpq reads them, with
//! rustls (ring) doing the work.
//!
//! | sslmode            | encrypted           | certificate checked                           |
//! |--------------------|---------------------|-----------------------------------------------|
//! | `disable`          | no                  | -                                             |
//! | `allow`, `prefer`  | when the server can | no                                            |
//! | `require`          | yes                 | no; as `verify-ca` when `sslrootcert` is given |
//! | `verify-ca`        | yes                 | signed by a trusted root                      |
//! | `verify-full`      | yes                 | signed by a trusted root and names the host   |
//!
//! `prefer` is the default, as in libpq. The trusted roots are the PEM file `sslrootcert`
//! names, or the system's (`/etc/ssl/certs`) when it is absent or says `system`. (libpq
//! reads `~/.postgresql/root.crt` by default; a service has no home worth the name.)
//! `allow` tries TLS first where libpq tries plain first: both end on whatever the server
//! accepts.

use std::path::Path;
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The connector a [`super::GalleryUrl`] connects with: none for `disable`.
#[derive(Clone)]
pub struct Tls {
    pub mode: Mode,
    pub connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Takes `sslmode` and `sslrootcert` out of `url`'s query (the PostgreSQL client library
    /// knows only disable/prefer/require and no root file) and builds the connector they ask
    /// for. Returns the rest of the URL, for the client library to parse.
    pub fn from_url(url: &str) -> Result<(Tls, String), String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let mut root = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(parse_mode(&percent_decode(value)?)?),
                "sslrootcert" => root = Some(percent_decode(value)?),
                _ => rest.push(pair),
            }
        }
        let mut mode = mode.unwrap_or(Mode::Prefer);
        if mode == Mode::Require && root.is_some() {
            mode = Mode::VerifyCa; // as libpq does when a root certificate is given
        }
        let rest = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let connector = match mode {
            Mode::Disable => None,
            Mode::Prefer | Mode::Require => Some(connector(None, false)?),
            Mode::VerifyCa | Mode::VerifyFull => {
                let roots = match root.as_deref() {
                    None | Some("system") => system_roots()?,
                    Some(file) => roots_from_file(Path::new(file))?,
                };
                Some(connector(Some(roots), mode == Mode::VerifyFull)?)
            }
        };
        Ok((Tls { mode, connector }, rest))
    }

    /// The client library's mode: whether TLS is tried, and whether it is required.
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

fn parse_mode(value: &str) -> Result<Mode, String> {
    Ok(match value {
        "disable" => Mode::Disable,
        "allow" | "prefer" => Mode::Prefer,
        "require" => Mode::Require,
        "verify-ca" => Mode::VerifyCa,
        "verify-full" => Mode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode={other}: expected disable, allow, prefer, require, verify-ca or \
                 verify-full"
            ))
        }
    })
}

/// `%2F` and friends, for a root certificate's path in a URL.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the URL's query")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's query is not UTF-8".into())
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "sslmode asks for a certificate check, and the system has no trusted root \
             certificates (install ca-certificates, or name a file with sslrootcert=){}",
            found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    Ok(roots)
}

fn roots_from_file(file: &Path) -> Result<RootCertStore, String> {
    let shown = file.display();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("sslrootcert {shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {shown}: no PEM certificate in it"));
    }
    Ok(roots)
}

fn connector(roots: Option<RootCertStore>, check_name: bool) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier {
        roots: roots.map(Arc::new),
        check_name,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous() // only so that `require` can skip the chain, as libpq's does
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's three levels of checking in one verifier: none (`prefer`, `require`), the chain
/// (`verify-ca`), the chain and the host name (`verify-full`). The handshake's signatures
/// are always checked, so the session is with whoever holds the certificate's key.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            if self.check_name {
                rustls::client::verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (tls, rest) =
            Tls::from_url("postgresql://u@h/db?connect_timeout=3&sslmode=disable").unwrap();
        assert_eq!(tls.mode, Mode::Disable);
        assert!(tls.connector.is_none());
        assert_eq!(rest, "postgresql://u@h/db?connect_timeout=3");
        let (tls, rest) = Tls::from_url("postgresql://u@h/db").unwrap();
        assert_eq!((tls.mode, tls.ssl_mode()), (Mode::Prefer, SslMode::Prefer));
        assert_eq!(rest, "postgresql://u@h/db");
        let (tls, _) = Tls::from_url("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (tls.mode, tls.ssl_mode()),
            (Mode::Require, SslMode::Require)
        );
        assert!(Tls::from_url("postgresql://u@h/db?sslmode=maybe")
            .unwrap_err()
            .contains("verify-full"));
        let missing =
            Tls::from_url("postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Fno").unwrap_err();
        assert!(missing.contains("sslrootcert /no"), "{missing}");
    }
}
