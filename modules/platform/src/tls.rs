//! What TLS to the services needs from files: the certificates of a private
//! CA, checked when a process starts so that a wrong file is named with the
//! setting that gave it, not met later as a failed handshake.

use std::path::Path;

/// The PEM certificates in the file at `path`, which the setting `setting`
/// names; refused when the file cannot be read or holds no certificate.
pub fn ca_certificates(path: &Path, setting: &str) -> Result<String, String> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|err| format!("{setting} {shown} cannot be read: {err}"))?;
    match String::from_utf8(pem) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(pem),
        _ => Err(format!(
            "{setting} {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )),
    }
}
