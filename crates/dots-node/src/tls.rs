//! TLS server configuration: the operator's certificate, or a self-signed
//! one generated once into the data directory for development.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Loads (or creates) the certificate and key and builds a rustls config.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    names: &[String],
) -> anyhow::Result<(Arc<rustls::ServerConfig>, PathBuf)> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => generate_self_signed(data_dir, names)?,
        _ => anyhow::bail!(
            "set both tls_cert and tls_key, or neither (a self-signed pair is then generated)"
        ),
    };
    let certs: Vec<CertificateDer<'static>> = {
        let pem = std::fs::read(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificates in {}", cert_path.display()))?
    };
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", cert_path.display());
    }
    let key: PrivateKeyDer<'static> = {
        let pem =
            std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .with_context(|| format!("parsing key in {}", key_path.display()))?
            .with_context(|| format!("no private key found in {}", key_path.display()))?
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key do not match")?;
    Ok((Arc::new(config), cert_path))
}

fn generate_self_signed(data_dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sans: Vec<String> = names.to_vec();
    sans.push("localhost".into());
    sans.sort();
    sans.dedup();
    let certified =
        rcgen::generate_simple_self_signed(sans).context("generating a self-signed certificate")?;
    std::fs::write(&cert_path, certified.cert.pem())?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate (set sip.tls_cert and sip.tls_key for a real one)");
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
