//! A throwaway certificate authority standing in for istiod's, made at every start: workload
//! certificates with SPIFFE identities (`spiffe://cluster.local/ns/<ns>/sa/<sa>` as the only URI
//! SAN, as istiod issues them) for the sidecars and the egress gateway, and one server
//! certificate per Cloud Foundry hostname for the router (trusted by the gateway in place of the
//! foundation's CA).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{Datelike, Days, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::policy::Identity;

/// PEM files written by [`generate`].
#[derive(Debug, Clone)]
pub struct Certificates {
    pub ca_cert: PathBuf,
    pub leaves: Vec<LeafCertificate>,
    pub workloads: Vec<WorkloadCertificate>,
}

/// A server certificate for one hostname and its key.
#[derive(Debug, Clone)]
pub struct LeafCertificate {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A workload's mesh certificate (what istiod's CA signs for its proxy) and its key.
#[derive(Debug, Clone)]
pub struct WorkloadCertificate {
    pub identity: Identity,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificates {
    pub fn leaf(&self, host: &str) -> Option<&LeafCertificate> {
        self.leaves.iter().find(|leaf| leaf.host == host)
    }

    pub fn workload(&self, identity: &Identity) -> Option<&WorkloadCertificate> {
        self.workloads.iter().find(|w| &w.identity == identity)
    }
}

/// Writes `ca.pem`, `<host>.pem`/`.key` for each host and `<ns>.<sa>.pem`/`.key` for each
/// identity into `dir`.
pub fn generate(
    dir: &Path,
    hosts: &[String],
    identities: &[Identity],
) -> anyhow::Result<Certificates> {
    let authority = Authority::new("local-mesh throwaway CA (istiod's stand-in)")?;
    let ca_cert = authority.write_ca(dir)?;
    let mut leaves = Vec::new();
    for host in hosts {
        let (cert, key) = authority.write_server(dir, host)?;
        leaves.push(LeafCertificate {
            host: host.clone(),
            cert,
            key,
        });
    }
    let mut workloads = Vec::new();
    for identity in identities {
        workloads.push(authority.write_workload(dir, identity)?);
    }
    Ok(Certificates {
        ca_cert,
        leaves,
        workloads,
    })
}

/// A certificate authority; tests make a foreign one to show the mesh refuses it.
pub struct Authority {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(common_name: &str) -> anyhow::Result<Authority> {
        let mut params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
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
        Ok(Authority {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Writes `ca.pem` into `dir`.
    pub fn write_ca(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("ca.pem");
        write(&path, &self.ca_pem, false)?;
        Ok(path)
    }

    /// A server certificate for `host` (DNS SAN and CN).
    pub fn write_server(&self, dir: &Path, host: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(vec![host.to_owned()])
            .with_context(|| format!("{host} is not a valid certificate name"))?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.write_leaf(dir, host, params)
    }

    /// A workload certificate: the SPIFFE ID as its only SAN, no subject, for client and server
    /// use (as istiod's CA issues them).
    pub fn write_workload(
        &self,
        dir: &Path,
        identity: &Identity,
    ) -> anyhow::Result<WorkloadCertificate> {
        let spiffe = identity.spiffe_id();
        let mut params = CertificateParams::new(Vec::<String>::new()).context("parameters")?;
        params.subject_alt_names =
            vec![SanType::URI(spiffe.as_str().try_into().with_context(
                || format!("{spiffe} is not a valid URI SAN"),
            )?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let name = format!("{}.{}", identity.namespace, identity.service_account);
        let (cert, key) = self.write_leaf(dir, &name, params)?;
        Ok(WorkloadCertificate {
            identity: identity.clone(),
            cert,
            key,
        })
    }

    fn write_leaf(
        &self,
        dir: &Path,
        name: &str,
        mut params: CertificateParams,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params);
        let key =
            KeyPair::generate().with_context(|| format!("cannot generate a key for {name}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("cannot sign the certificate for {name}"))?;
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok((cert_path, key_path))
    }
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
