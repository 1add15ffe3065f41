//! A throwaway certificate authority and one leaf certificate per Cloud Foundry hostname, made at
//! every start: the local router presents the leaves, the local egress gateway trusts the CA.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Datelike, Days, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files written by [`generate`].
#[derive(Debug, Clone)]
pub struct Certificates {
    pub ca_cert: PathBuf,
    pub leaves: Vec<LeafCertificate>,
}

/// A server certificate for one hostname and its key.
#[derive(Debug, Clone)]
pub struct LeafCertificate {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    pub fn leaf(&self, host: &str) -> Option<&LeafCertificate> {
        self.leaves.iter().find(|leaf| leaf.host == host)
    }
}

/// Writes `ca.pem` and `<host>.pem` / `<host>.key` for each host into `dir`.
pub fn generate(dir: &Path, hosts: &[String]) -> anyhow::Result<Certificates> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_pem, issuer) = certificate_authority()?;
    let ca_cert = dir.join("ca.pem");
    write(&ca_cert, &ca_pem, false)?;
    let mut leaves = Vec::new();
    for host in hosts {
        let (cert_pem, key_pem) = leaf(host, &issuer)?;
        let cert = dir.join(format!("{host}.pem"));
        let key = dir.join(format!("{host}.key"));
        write(&cert, &cert_pem, false)?;
        write(&key, &key_pem, true)?;
        leaves.push(LeafCertificate {
            host: host.clone(),
            cert,
            key,
        });
    }
    Ok(Certificates { ca_cert, leaves })
}

fn certificate_authority() -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "local-mesh throwaway CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn leaf(host: &str, issuer: &Issuer<'static, KeyPair>) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(vec![host.to_owned()])
        .with_context(|| format!("{host} is not a valid certificate name"))?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params);
    let key = KeyPair::generate().with_context(|| format!("cannot generate a key for {host}"))?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("cannot sign the certificate for {host}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Valid from yesterday (clock skew) for a year: long enough for any demo run.
fn set_validity(params: &mut CertificateParams) {
    let today = Utc::now().date_naive();
    let from = today.checked_sub_days(Days::new(1)).unwrap_or(today);
    let until = today.checked_add_days(Days::new(365)).unwrap_or(today);
    let date = |day: chrono::NaiveDate| {
        rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8)
    };
    params.not_before = date(from);
    params.not_after = date(until);
}

fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
