//! The exporter-toolkit web config file (`--web.config.file`, api.md §3.3): strict parsing
//! and validation, the rustls server config it describes (re-read when the certificate,
//! key or client CA files change), and a handle that re-reads the file itself when it
//! changes.
//!
//! Validity has two levels, as in the reference. The file (strict YAML, allowed headers,
//! TLS settings) is checked whenever it is read: when it is invalid, every request gets a
//! 500. The TLS material (PEM files) is read at handshake time: when it does not load,
//! handshakes fail. At startup both are checked, plus the bcrypt hashes, and any error is
//! returned to the caller.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

use super::basic_auth::{BasicAuthConfigError, BasicAuthUsers, BasicAuthVerifier};

/// How often the handle looks at the file's modification time.
pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The only headers `http_server_config.headers` may set, with their allowed values (an
/// empty list allows any value). Names are matched exactly, as in the reference.
const CONFIGURABLE_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Everything that can be wrong with the web config or the TLS material it names.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read web config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("HTTP header {0:?} can not be configured")]
    HeaderNotAllowed(String),
    #[error("invalid value for {name}. Expected one of: {expected:?}, but got: {got:?}")]
    HeaderValueNotAllowed {
        name: String,
        expected: &'static [&'static str],
        got: String,
    },
    #[error("HTTP header {name}: {got:?} is not a valid header value")]
    HeaderValueInvalid { name: String, got: String },
    #[error("tls_server_config: {0}")]
    Tls(String),
    #[error("tls_server_config: cannot load {what}: {message}")]
    TlsMaterial { what: &'static str, message: String },
    #[error(transparent)]
    BasicAuth(#[from] BasicAuthConfigError),
}

/// `tls_server_config.client_auth_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthType {
    NoClientCert,
    RequestClientCert,
    /// Also spelled `RequireClientCert`, kept by the reference for backwards compatibility.
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuthType {
    fn parse(value: &str) -> Result<Self, WebConfigError> {
        match value {
            "" | "NoClientCert" => Ok(ClientAuthType::NoClientCert),
            "RequestClientCert" => Ok(ClientAuthType::RequestClientCert),
            "RequireAnyClientCert" | "RequireClientCert" => {
                Ok(ClientAuthType::RequireAnyClientCert)
            }
            "VerifyClientCertIfGiven" => Ok(ClientAuthType::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Ok(ClientAuthType::RequireAndVerifyClientCert),
            other => Err(WebConfigError::Tls(format!("invalid ClientAuth: {other}"))),
        }
    }

    fn verifies_chain(self) -> bool {
        matches!(
            self,
            ClientAuthType::VerifyClientCertIfGiven | ClientAuthType::RequireAndVerifyClientCert
        )
    }
}

/// `min_version` / `max_version`, in Go's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(value: &str) -> Result<Self, WebConfigError> {
        match value {
            "TLS10" => Ok(TlsVersion::Tls10),
            "TLS11" => Ok(TlsVersion::Tls11),
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            other => Err(WebConfigError::Tls(format!("unknown TLS version: {other}"))),
        }
    }
}

impl fmt::Display for TlsVersion {
    /// Go's spelling, as written in the file.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            TlsVersion::Tls10 => "TLS10",
            TlsVersion::Tls11 => "TLS11",
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        })
    }
}

/// Where a PEM document comes from: a file (re-read when it changes) or the YAML itself.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

impl fmt::Debug for PemSource {
    /// Inline values may be private keys: never print them.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => formatter.debug_tuple("File").field(path).finish(),
            PemSource::Inline(text) => write!(formatter, "Inline(<{} bytes>)", text.len()),
        }
    }
}

impl PemSource {
    fn read(&self, what: &'static str) -> Result<Vec<u8>, WebConfigError> {
        match self {
            PemSource::Inline(text) => Ok(text.clone().into_bytes()),
            PemSource::File(path) => {
                std::fs::read(path).map_err(|error| WebConfigError::TlsMaterial {
                    what,
                    message: format!("{}: {error}", path.display()),
                })
            }
        }
    }

    fn stamp(&self) -> Option<FileStamp> {
        match self {
            PemSource::Inline(_) => None,
            PemSource::File(path) => FileStamp::of(path).ok(),
        }
    }
}

/// A validated `tls_server_config` that turns TLS on.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub certificate: PemSource,
    pub private_key: PemSource,
    pub client_ca: Option<PemSource>,
    pub client_auth: ClientAuthType,
    pub client_allowed_sans: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// The protocol versions rustls will offer, after mapping (see `WebConfig::adjustments`).
    pub protocol_versions: Vec<&'static SupportedProtocolVersion>,
    /// The ring provider restricted to the configured cipher suites and curves.
    pub crypto_provider: Arc<CryptoProvider>,
}

/// A parsed and validated web config file.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// `None`: plain HTTP (basic auth and headers still apply).
    pub tls: Option<TlsSettings>,
    /// `http_server_config.http2`, default true.
    pub http2: bool,
    /// `http_server_config.headers`, validated.
    pub headers: http::HeaderMap,
    pub basic_auth_users: BasicAuthUsers,
    /// Settings this server cannot honour exactly and how they were mapped (for example
    /// `min_version: TLS10` served as TLS 1.2); logged when the file is loaded.
    pub adjustments: Vec<String>,
}

impl WebConfig {
    /// Reads and validates the file. Does not load the TLS material nor check the bcrypt
    /// hashes (see `WebConfigHandle::open` for the startup checks).
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates the YAML text of the file at `path`; relative file names in it are taken
    /// from `path`'s directory.
    pub fn parse(yaml: &str, path: &Path) -> Result<Self, WebConfigError> {
        let raw: RawWebConfig = yaml_serde::from_str::<Option<RawWebConfig>>(yaml)
            .map_err(|error| WebConfigError::Syntax {
                path: path.to_owned(),
                message: error.to_string(),
            })?
            .unwrap_or_default();
        let config_dir = path.parent().unwrap_or_else(|| Path::new(""));
        let raw_http = raw.http_server_config.unwrap_or_default();
        let headers = validate_headers(raw_http.headers.map(|map| map.0).unwrap_or_default())?;
        let mut adjustments = Vec::new();
        let tls = parse_tls_settings(
            raw.tls_server_config.unwrap_or_default(),
            config_dir,
            &mut adjustments,
        )?;
        let basic_auth_users =
            BasicAuthUsers::new(raw.basic_auth_users.map(|map| map.0).unwrap_or_default());
        Ok(WebConfig {
            tls,
            http2: raw_http.http2.is_none_or(|flag| flag.0),
            headers,
            basic_auth_users,
            adjustments,
        })
    }
}

// ------------------------------------------------------------------------------------------
// Raw YAML shapes. Every field is optional so that a YAML null means "default", and every
// struct denies unknown keys, as the reference's strict unmarshalling does.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<RawHttpServerConfig>,
    #[serde(default)]
    basic_auth_users: Option<UniqueKeyMap>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsServerConfig {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<YamlBool>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpServerConfig {
    #[serde(default)]
    http2: Option<YamlBool>,
    #[serde(default)]
    headers: Option<UniqueKeyMap>,
}

/// A string-to-string mapping in file order that rejects duplicate keys (serde's maps keep
/// the last value silently; the reference's strict YAML refuses the file). A null value
/// reads as the empty string, as in Go.
#[derive(Debug, Default)]
struct UniqueKeyMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for UniqueKeyMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueKeyMapVisitor;
        impl<'de> serde::de::Visitor<'de> for UniqueKeyMapVisitor {
            type Value = UniqueKeyMap;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a mapping of strings to strings")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(UniqueKeyMap::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = access.next_entry::<String, Option<String>>()? {
                    if entries.iter().any(|(existing, _)| *existing == key) {
                        return Err(serde::de::Error::custom(format!(
                            "key {key:?} already set in map"
                        )));
                    }
                    entries.push((key, value.unwrap_or_default()));
                }
                Ok(UniqueKeyMap(entries))
            }
        }
        deserializer.deserialize_any(UniqueKeyMapVisitor)
    }
}

/// A boolean as Go's YAML v2 reads one: YAML 1.1 spellings (`yes`, `on`, ...) included.
#[derive(Debug, Clone, Copy)]
struct YamlBool(bool);

impl<'de> Deserialize<'de> for YamlBool {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct YamlBoolVisitor;
        impl serde::de::Visitor<'_> for YamlBoolVisitor {
            type Value = YamlBool;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a boolean")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Ok(YamlBool(value))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                match value {
                    "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                    | "TRUE" => Ok(YamlBool(true)),
                    "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                    | "FALSE" => Ok(YamlBool(false)),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(YamlBoolVisitor)
    }
}

fn validate_headers(entries: Vec<(String, String)>) -> Result<http::HeaderMap, WebConfigError> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in entries {
        let Some((_, allowed_values)) = CONFIGURABLE_HEADERS
            .iter()
            .find(|(allowed_name, _)| *allowed_name == name)
        else {
            return Err(WebConfigError::HeaderNotAllowed(name));
        };
        if !allowed_values.is_empty() && !allowed_values.contains(&value.as_str()) {
            return Err(WebConfigError::HeaderValueNotAllowed {
                name,
                expected: allowed_values,
                got: value,
            });
        }
        let header_value = http::HeaderValue::from_str(&value).map_err(|_invalid| {
            WebConfigError::HeaderValueInvalid {
                name: name.clone(),
                got: value.clone(),
            }
        })?;
        let header_name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_invalid| WebConfigError::HeaderNotAllowed(name.clone()))?;
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

/// One of two spellings (`cert` inline or `cert_file`), never both.
fn pem_source(
    inline: Option<String>,
    file: Option<String>,
    inline_key: &str,
    file_key: &str,
    config_dir: &Path,
) -> Result<Option<PemSource>, WebConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(WebConfigError::Tls(format!(
            "cannot specify both {file_key} and {inline_key}"
        ))),
        (Some(text), None) => Ok(Some(PemSource::Inline(text))),
        (None, Some(file)) => Ok(Some(PemSource::File(resolve_against(config_dir, &file)))),
        (None, None) => Ok(None),
    }
}

/// Relative names are taken from the web config file's directory, absolute ones as given.
fn resolve_against(config_dir: &Path, file: &str) -> PathBuf {
    let file = Path::new(file);
    if file.is_absolute() {
        file.to_owned()
    } else {
        config_dir.join(file)
    }
}

fn parse_tls_settings(
    raw: RawTlsServerConfig,
    config_dir: &Path,
    adjustments: &mut Vec<String>,
) -> Result<Option<TlsSettings>, WebConfigError> {
    // Names and versions are checked even when TLS stays off: the reference rejects an
    // unknown cipher or curve while unmarshalling.
    let min_version = raw
        .min_version
        .as_deref()
        .map(TlsVersion::parse)
        .transpose()?
        .unwrap_or(TlsVersion::Tls12);
    let max_version = raw
        .max_version
        .as_deref()
        .map(TlsVersion::parse)
        .transpose()?
        .unwrap_or(TlsVersion::Tls13);
    let cipher_suites = raw
        .cipher_suites
        .unwrap_or_default()
        .iter()
        .map(|name| GoCipherSuite::parse(name))
        .collect::<Result<Vec<_>, _>>()?;
    let curves = raw
        .curve_preferences
        .unwrap_or_default()
        .iter()
        .map(|name| GoCurve::parse(name))
        .collect::<Result<Vec<_>, _>>()?;
    let client_auth_text = non_empty(raw.client_auth_type);

    let certificate_inline = non_empty(raw.cert);
    let certificate_file = non_empty(raw.cert_file);
    let key_inline = non_empty(raw.key);
    let key_file = non_empty(raw.key_file);
    let client_ca_inline = non_empty(raw.client_ca);
    let client_ca_file = non_empty(raw.client_ca_file);
    let tls_enabled = certificate_inline.is_some()
        || certificate_file.is_some()
        || key_inline.is_some()
        || key_file.is_some()
        || client_ca_inline.is_some()
        || client_ca_file.is_some()
        || client_auth_text.is_some();
    if !tls_enabled {
        return Ok(None);
    }

    let certificate = pem_source(
        certificate_inline,
        certificate_file,
        "cert",
        "cert_file",
        config_dir,
    )?
    .ok_or_else(|| WebConfigError::Tls("missing one of cert or cert_file".to_owned()))?;
    let private_key = pem_source(key_inline, key_file, "key", "key_file", config_dir)?
        .ok_or_else(|| WebConfigError::Tls("missing one of key or key_file".to_owned()))?;
    let client_ca = pem_source(
        client_ca_inline,
        client_ca_file,
        "client_ca",
        "client_ca_file",
        config_dir,
    )?;
    let client_auth = ClientAuthType::parse(client_auth_text.as_deref().unwrap_or(""))?;
    if client_ca.is_some() && client_auth == ClientAuthType::NoClientCert {
        return Err(WebConfigError::Tls(
            "client CA's have been configured without a Client Auth Policy".to_owned(),
        ));
    }
    if client_ca.is_none() && client_auth.verifies_chain() {
        return Err(WebConfigError::Tls(format!(
            "client_auth_type {client_auth:?} needs client_ca_file or client_ca"
        )));
    }
    let client_allowed_sans = raw.client_allowed_sans.unwrap_or_default();
    if !client_allowed_sans.is_empty() && client_auth == ClientAuthType::NoClientCert {
        return Err(WebConfigError::Tls(
            "client_allowed_sans needs a client_auth_type that asks for a client certificate"
                .to_owned(),
        ));
    }

    let (protocol_versions, crypto_provider) = restricted_provider(
        min_version,
        max_version,
        &cipher_suites,
        &curves,
        adjustments,
    )?;
    Ok(Some(TlsSettings {
        certificate,
        private_key,
        client_ca,
        client_auth,
        client_allowed_sans,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.is_none_or(|flag| flag.0),
        protocol_versions,
        crypto_provider: Arc::new(crypto_provider),
    }))
}

/// A name from Go's `tls.CipherSuites()` list, which is what the reference accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GoCipherSuite {
    /// TLS 1.3 suites: accepted in the list, but, as in Go, not configurable.
    Tls13,
    /// A TLS 1.2 suite rustls implements.
    Tls12(SupportedCipherSuite),
    /// A name Go knows that rustls does not implement (CBC and RSA key exchange).
    Unsupported(&'static str),
}

impl GoCipherSuite {
    fn parse(name: &str) -> Result<Self, WebConfigError> {
        use rustls::crypto::ring::cipher_suite as ring_suites;
        let suite = match name {
            "TLS_AES_128_GCM_SHA256"
            | "TLS_AES_256_GCM_SHA384"
            | "TLS_CHACHA20_POLY1305_SHA256" => GoCipherSuite::Tls13,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                GoCipherSuite::Tls12(ring_suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
            }
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                GoCipherSuite::Tls12(ring_suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
            }
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
                GoCipherSuite::Tls12(ring_suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
            }
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
                GoCipherSuite::Tls12(ring_suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
            }
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
                GoCipherSuite::Tls12(ring_suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
            }
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
                GoCipherSuite::Tls12(ring_suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
            }
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" => {
                GoCipherSuite::Unsupported("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA")
            }
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA" => {
                GoCipherSuite::Unsupported("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA")
            }
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" => {
                GoCipherSuite::Unsupported("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
            }
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => {
                GoCipherSuite::Unsupported("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA")
            }
            // Listed as secure by older Go releases.
            "TLS_RSA_WITH_AES_128_CBC_SHA" => {
                GoCipherSuite::Unsupported("TLS_RSA_WITH_AES_128_CBC_SHA")
            }
            "TLS_RSA_WITH_AES_256_CBC_SHA" => {
                GoCipherSuite::Unsupported("TLS_RSA_WITH_AES_256_CBC_SHA")
            }
            "TLS_RSA_WITH_AES_128_GCM_SHA256" => {
                GoCipherSuite::Unsupported("TLS_RSA_WITH_AES_128_GCM_SHA256")
            }
            "TLS_RSA_WITH_AES_256_GCM_SHA384" => {
                GoCipherSuite::Unsupported("TLS_RSA_WITH_AES_256_GCM_SHA384")
            }
            other => return Err(WebConfigError::Tls(format!("unknown cipher: {other}"))),
        };
        Ok(suite)
    }
}

/// A name from the reference's `curve_preferences` table.
#[derive(Debug, Clone, Copy)]
enum GoCurve {
    Supported(&'static dyn rustls::crypto::SupportedKxGroup),
    /// `CurveP521`: the ring provider has no P-521 key exchange.
    Unsupported(&'static str),
}

impl GoCurve {
    fn parse(name: &str) -> Result<Self, WebConfigError> {
        use rustls::crypto::ring::kx_group;
        match name {
            "CurveP256" => Ok(GoCurve::Supported(kx_group::SECP256R1)),
            "CurveP384" => Ok(GoCurve::Supported(kx_group::SECP384R1)),
            "X25519" => Ok(GoCurve::Supported(kx_group::X25519)),
            "CurveP521" => Ok(GoCurve::Unsupported("CurveP521")),
            other => Err(WebConfigError::Tls(format!("unknown curve: {other}"))),
        }
    }
}

/// The ring provider cut down to the configured TLS 1.2 suites and curves, and the protocol
/// versions to offer. rustls implements TLS 1.2 and 1.3 only.
fn restricted_provider(
    min_version: TlsVersion,
    max_version: TlsVersion,
    cipher_suites: &[GoCipherSuite],
    curves: &[GoCurve],
    adjustments: &mut Vec<String>,
) -> Result<(Vec<&'static SupportedProtocolVersion>, CryptoProvider), WebConfigError> {
    let default_provider = rustls::crypto::ring::default_provider();
    if max_version < TlsVersion::Tls12 {
        return Err(WebConfigError::Tls(format!(
            "max_version {max_version} is not supported: this server speaks TLS 1.2 and 1.3 only"
        )));
    }
    let mut effective_min = min_version;
    if min_version < TlsVersion::Tls12 {
        adjustments.push(format!(
            "tls_server_config.min_version {min_version} is served as TLS12: TLS 1.0 and 1.1 are not supported"
        ));
        effective_min = TlsVersion::Tls12;
    }
    if effective_min > max_version {
        return Err(WebConfigError::Tls(format!(
            "min_version {min_version} is above max_version {max_version}"
        )));
    }
    let mut offer_tls12 = effective_min == TlsVersion::Tls12;
    let offer_tls13 = max_version == TlsVersion::Tls13;

    // Go applies `cipher_suites` to TLS 1.2 only; TLS 1.3 suites are always on.
    let mut suites: Vec<SupportedCipherSuite> = default_provider
        .cipher_suites
        .iter()
        .copied()
        .filter(|suite| suite.version() == &rustls::version::TLS13)
        .collect();
    let configured_tls12: Vec<SupportedCipherSuite> = cipher_suites
        .iter()
        .filter_map(|suite| match suite {
            GoCipherSuite::Tls12(suite) => Some(*suite),
            GoCipherSuite::Tls13 | GoCipherSuite::Unsupported(_) => None,
        })
        .collect();
    for suite in cipher_suites {
        if let GoCipherSuite::Unsupported(name) = suite {
            adjustments.push(format!(
                "tls_server_config.cipher_suites: {name} is not supported by this server and is skipped"
            ));
        }
    }
    if cipher_suites.is_empty() {
        suites.extend(
            default_provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|suite| suite.version() == &rustls::version::TLS12),
        );
    } else if configured_tls12.is_empty() {
        if offer_tls12 {
            adjustments.push(
                "tls_server_config.cipher_suites lists no TLS 1.2 suite this server supports: TLS 1.2 is off"
                    .to_owned(),
            );
        }
        offer_tls12 = false;
    } else {
        suites.extend(configured_tls12);
    }

    let mut protocol_versions = Vec::new();
    if offer_tls13 {
        protocol_versions.push(&rustls::version::TLS13);
    }
    if offer_tls12 {
        protocol_versions.push(&rustls::version::TLS12);
    }
    if protocol_versions.is_empty() {
        return Err(WebConfigError::Tls(
            "no protocol version is left: cipher_suites and min_version/max_version exclude each other"
                .to_owned(),
        ));
    }

    let mut kx_groups = default_provider.kx_groups.clone();
    if !curves.is_empty() {
        kx_groups = Vec::new();
        for curve in curves {
            match curve {
                GoCurve::Supported(group) => {
                    if !kx_groups.iter().any(|existing| existing.name() == group.name()) {
                        kx_groups.push(*group);
                    }
                }
                GoCurve::Unsupported(name) => adjustments.push(format!(
                    "tls_server_config.curve_preferences: {name} is not supported by this server and is skipped"
                )),
            }
        }
        if kx_groups.is_empty() {
            return Err(WebConfigError::Tls(
                "curve_preferences lists no curve this server supports".to_owned(),
            ));
        }
    }

    Ok((
        protocol_versions,
        CryptoProvider {
            cipher_suites: suites,
            kx_groups,
            ..default_provider
        },
    ))
}

// ------------------------------------------------------------------------------------------
// TLS material: the rustls server config, rebuilt when a PEM file changes.

/// Identity of a file's current content, cheap to read: a changed value means "re-read".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(FileStamp {
            modified: metadata.modified().ok(),
            length: metadata.len(),
            inode,
        })
    }
}

struct CachedServerConfig {
    stamps: [Option<FileStamp>; 3],
    outcome: Result<Arc<ServerConfig>, Arc<WebConfigError>>,
}

/// Builds the rustls server config of one web config version and rebuilds it when the
/// certificate, key or client CA file changes, so they can be rotated without a restart.
pub struct TlsServerConfigSource {
    settings: TlsSettings,
    alpn_protocols: Vec<Vec<u8>>,
    cached: Mutex<Option<CachedServerConfig>>,
}

impl fmt::Debug for TlsServerConfigSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TlsServerConfigSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfigSource {
    pub fn new(settings: TlsSettings, http2: bool) -> Self {
        let mut alpn_protocols = Vec::new();
        if http2 {
            alpn_protocols.push(b"h2".to_vec());
        }
        alpn_protocols.push(b"http/1.1".to_vec());
        TlsServerConfigSource {
            settings,
            alpn_protocols,
            cached: Mutex::new(None),
        }
    }

    /// The server config for a new handshake. Stats the PEM files each time (cheap) and
    /// re-reads them only when one changed; an error is kept until a file changes again.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Arc<WebConfigError>> {
        let stamps = self.material_stamps();
        let mut cached = lock_ignoring_poison(&self.cached);
        if let Some(cached) = cached.as_ref() {
            if cached.stamps == stamps {
                return cached.outcome.clone();
            }
        }
        let outcome = build_server_config(&self.settings, &self.alpn_protocols)
            .map(Arc::new)
            .map_err(Arc::new);
        if let Err(error) = &outcome {
            tracing::error!(%error, "TLS material does not load; TLS handshakes fail until it is fixed");
        }
        *cached = Some(CachedServerConfig {
            stamps,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Loads the material now, for the startup check: the error comes back by value and
    /// only a success is kept.
    fn load_now(&self) -> Result<(), WebConfigError> {
        let stamps = self.material_stamps();
        let config = build_server_config(&self.settings, &self.alpn_protocols)?;
        *lock_ignoring_poison(&self.cached) = Some(CachedServerConfig {
            stamps,
            outcome: Ok(Arc::new(config)),
        });
        Ok(())
    }

    fn material_stamps(&self) -> [Option<FileStamp>; 3] {
        [
            self.settings.certificate.stamp(),
            self.settings.private_key.stamp(),
            self.settings.client_ca.as_ref().and_then(PemSource::stamp),
        ]
    }
}

fn build_server_config(
    settings: &TlsSettings,
    alpn_protocols: &[Vec<u8>],
) -> Result<ServerConfig, WebConfigError> {
    let certificate_pem = settings.certificate.read("the certificate")?;
    let certificate_chain = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| WebConfigError::TlsMaterial {
            what: "the certificate",
            message: error.to_string(),
        })?;
    if certificate_chain.is_empty() {
        return Err(WebConfigError::TlsMaterial {
            what: "the certificate",
            message: "no CERTIFICATE block found".to_owned(),
        });
    }
    let key_pem = settings.private_key.read("the private key")?;
    let private_key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| WebConfigError::TlsMaterial {
            what: "the private key",
            message: error.to_string(),
        })?;

    let provider = Arc::clone(&settings.crypto_provider);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&settings.protocol_versions)
        .map_err(|error| WebConfigError::Tls(error.to_string()))?;
    let verifier = client_cert_verifier(settings, &provider)?;
    let mut config = match verifier {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    }
    .with_single_cert(certificate_chain, private_key)
    .map_err(|error| WebConfigError::TlsMaterial {
        what: "the certificate and key pair",
        message: error.to_string(),
    })?;
    config.alpn_protocols = alpn_protocols.to_vec();
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    Ok(config)
}

fn client_cert_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, WebConfigError> {
    let roots = settings
        .client_ca
        .as_ref()
        .map(load_client_ca)
        .transpose()?;
    let verifier: Arc<dyn ClientCertVerifier> = match settings.client_auth {
        ClientAuthType::NoClientCert => return Ok(None),
        ClientAuthType::RequestClientCert | ClientAuthType::RequireAnyClientCert => {
            Arc::new(UnverifiedClientCertificate {
                mandatory: settings.client_auth == ClientAuthType::RequireAnyClientCert,
                root_hints: roots
                    .as_ref()
                    .map(|roots| roots.subjects())
                    .unwrap_or_default(),
                provider: Arc::clone(provider),
            })
        }
        ClientAuthType::VerifyClientCertIfGiven | ClientAuthType::RequireAndVerifyClientCert => {
            let roots = roots.ok_or_else(|| {
                WebConfigError::Tls("client certificate verification needs a client CA".to_owned())
            })?;
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
            if settings.client_auth == ClientAuthType::VerifyClientCertIfGiven {
                builder = builder.allow_unauthenticated();
            }
            builder
                .build()
                .map_err(|error| WebConfigError::TlsMaterial {
                    what: "the client CA",
                    message: error.to_string(),
                })?
        }
    };
    if settings.client_allowed_sans.is_empty() {
        return Ok(Some(verifier));
    }
    Ok(Some(Arc::new(AllowedSubjectAltNames {
        inner: verifier,
        allowed: settings.client_allowed_sans.clone(),
    })))
}

fn load_client_ca(source: &PemSource) -> Result<RootCertStore, WebConfigError> {
    let pem = source.read("the client CA")?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| WebConfigError::TlsMaterial {
            what: "the client CA",
            message: error.to_string(),
        })?;
        roots
            .add(certificate)
            .map_err(|error| WebConfigError::TlsMaterial {
                what: "the client CA",
                message: error.to_string(),
            })?;
    }
    if roots.is_empty() {
        return Err(WebConfigError::TlsMaterial {
            what: "the client CA",
            message: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(roots)
}

/// `RequestClientCert` / `RequireAnyClientCert`: ask for a certificate and check only that
/// the client holds its key (the handshake signature), not who issued it.
#[derive(Debug)]
struct UnverifiedClientCertificate {
    mandatory: bool,
    root_hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for UnverifiedClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `client_allowed_sans`: after the inner verifier accepts the certificate, one of its DNS,
/// e-mail, IP or URI subject alternative names must equal an allowed entry. A certificate
/// is then always required (the reference fails such handshakes too: it has nothing to
/// match against).
#[derive(Debug)]
struct AllowedSubjectAltNames {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSubjectAltNames {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if names.iter().any(|name| self.allowed.contains(name)) {
            Ok(verified)
        } else {
            tracing::debug!(found = ?names, "client certificate has no allowed SAN");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's DNS, e-mail, IP and URI SANs as Go prints them; `None` when the
/// certificate does not parse.
fn subject_alt_names(certificate: &CertificateDer<'_>) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer as _;
    let (_, parsed) =
        x509_parser::certificate::X509Certificate::from_der(certificate.as_ref()).ok()?;
    let Some(extension) = parsed.subject_alternative_name().ok()? else {
        return Some(Vec::new());
    };
    let mut names = Vec::new();
    for name in &extension.value.general_names {
        match name {
            GeneralName::DNSName(text) | GeneralName::RFC822Name(text) | GeneralName::URI(text) => {
                names.push((*text).to_owned());
            }
            GeneralName::IPAddress(bytes) => {
                if let Some(address) = ip_address_text(bytes) {
                    names.push(address);
                }
            }
            _ => {}
        }
    }
    Some(names)
}

/// Go's `net.IP.String`: IPv4-mapped IPv6 addresses print in dotted form.
fn ip_address_text(bytes: &[u8]) -> Option<String> {
    if let Ok(octets) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::Ipv4Addr::from(octets).to_string());
    }
    let octets = <[u8; 16]>::try_from(bytes).ok()?;
    let address = std::net::Ipv6Addr::from(octets);
    Some(match address.to_ipv4_mapped() {
        Some(mapped) => mapped.to_string(),
        None => address.to_string(),
    })
}

// ------------------------------------------------------------------------------------------
// The live handle.

/// One version of the web config file, as served.
#[derive(Debug)]
pub struct ActiveWebConfig {
    config: WebConfig,
    tls: Option<TlsServerConfigSource>,
}

impl ActiveWebConfig {
    fn new(config: WebConfig) -> Self {
        let tls = config
            .tls
            .clone()
            .map(|settings| TlsServerConfigSource::new(settings, config.http2));
        ActiveWebConfig { config, tls }
    }

    pub fn config(&self) -> &WebConfig {
        &self.config
    }

    /// `None` when this version of the file does not turn TLS on.
    pub fn tls_server_config(&self) -> Option<Result<Arc<ServerConfig>, Arc<WebConfigError>>> {
        self.tls.as_ref().map(TlsServerConfigSource::server_config)
    }
}

struct HandleState {
    checked_at: Instant,
    stamp: Option<FileStamp>,
    current: Result<Arc<ActiveWebConfig>, Arc<WebConfigError>>,
    /// The users of the last valid version, to drop cached verifications on change.
    last_valid_users: BasicAuthUsers,
}

struct HandleShared {
    path: PathBuf,
    recheck_interval: Duration,
    tls_at_start: bool,
    basic_auth: BasicAuthVerifier,
    state: Mutex<HandleState>,
}

/// The web config file as the server sees it now: re-read when its modification time
/// changes (looked at most once per `recheck_interval`). Cheap to clone.
#[derive(Clone)]
pub struct WebConfigHandle {
    shared: Arc<HandleShared>,
}

impl fmt::Debug for WebConfigHandle {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("WebConfigHandle")
            .field("path", &self.shared.path)
            .field("tls_at_start", &self.shared.tls_at_start)
            .finish_non_exhaustive()
    }
}

impl WebConfigHandle {
    /// Loads the file for the server's start: the file, its bcrypt hashes and its TLS
    /// material must all be valid. The path is made absolute against the working
    /// directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WebConfigError> {
        Self::open_with_recheck_interval(path, DEFAULT_RECHECK_INTERVAL)
    }

    /// `open` with another interval between looks at the file's modification time.
    pub fn open_with_recheck_interval(
        path: impl AsRef<Path>,
        recheck_interval: Duration,
    ) -> Result<Self, WebConfigError> {
        let path = std::path::absolute(path.as_ref()).map_err(|source| WebConfigError::Read {
            path: path.as_ref().to_owned(),
            source,
        })?;
        let stamp = FileStamp::of(&path).map_err(|source| WebConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config = WebConfig::load(&path)?;
        config.basic_auth_users.validate_hashes()?;
        log_adjustments(&config);
        let active = ActiveWebConfig::new(config);
        if let Some(tls) = &active.tls {
            tls.load_now()?;
        }
        let tls_at_start = active.tls.is_some();
        let last_valid_users = active.config.basic_auth_users.clone();
        Ok(WebConfigHandle {
            shared: Arc::new(HandleShared {
                path,
                recheck_interval,
                tls_at_start,
                basic_auth: BasicAuthVerifier::new(),
                state: Mutex::new(HandleState {
                    checked_at: Instant::now(),
                    stamp: Some(stamp),
                    current: Ok(Arc::new(active)),
                    last_valid_users,
                }),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether the listener serves TLS: decided once, from the file at startup, as the
    /// reference does.
    pub fn tls_enabled_at_start(&self) -> bool {
        self.shared.tls_at_start
    }

    /// The basic-auth verifier and its cache, shared by every connection.
    pub fn basic_auth(&self) -> &BasicAuthVerifier {
        &self.shared.basic_auth
    }

    /// The file's current version, or why it is invalid now.
    pub fn current(&self) -> Result<Arc<ActiveWebConfig>, Arc<WebConfigError>> {
        let mut state = lock_ignoring_poison(&self.shared.state);
        if state.checked_at.elapsed() < self.shared.recheck_interval {
            return state.current.clone();
        }
        state.checked_at = Instant::now();
        let stamp = match FileStamp::of(&self.shared.path) {
            Ok(stamp) => stamp,
            Err(source) => {
                if state.stamp.is_some() {
                    let error = WebConfigError::Read {
                        path: self.shared.path.clone(),
                        source,
                    };
                    tracing::error!(%error, "web config file is unreadable; every request gets a 500 until it is fixed");
                    state.current = Err(Arc::new(error));
                    state.stamp = None;
                }
                return state.current.clone();
            }
        };
        if state.stamp == Some(stamp) {
            return state.current.clone();
        }
        state.stamp = Some(stamp);
        match WebConfig::load(&self.shared.path) {
            Ok(config) => {
                log_adjustments(&config);
                self.shared
                    .basic_auth
                    .forget_changed_users(&state.last_valid_users, &config.basic_auth_users);
                state.last_valid_users = config.basic_auth_users.clone();
                tracing::info!(path = %self.shared.path.display(), "web config file reloaded");
                state.current = Ok(Arc::new(ActiveWebConfig::new(config)));
            }
            Err(error) => {
                tracing::error!(%error, "web config file is invalid; every request gets a 500 until it is fixed");
                state.current = Err(Arc::new(error));
            }
        }
        state.current.clone()
    }
}

fn log_adjustments(config: &WebConfig) {
    for adjustment in &config.adjustments {
        tracing::warn!("{adjustment}");
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
pub(crate) mod test_material {
    //! Certificates for tests: a CA, a server certificate for localhost/127.0.0.1 and
    //! client certificates, all generated fresh.

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };

    /// Gives the file a modification time clearly different from any earlier write, so
    /// that a change is seen even within the file system's timestamp resolution.
    pub fn touch_later(path: &std::path::Path) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT_OFFSET: AtomicU64 = AtomicU64::new(1);
        let offset = NEXT_OFFSET.fetch_add(1, Ordering::Relaxed);
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("file exists");
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(offset))
            .expect("mtime can be set");
    }

    pub struct CertificateAuthority {
        pub certificate_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    pub struct IssuedCertificate {
        pub certificate_pem: String,
        pub key_pem: String,
    }

    impl CertificateAuthority {
        pub fn new(common_name: &str) -> Self {
            let key = KeyPair::generate().expect("key generation works");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SANs");
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let certificate = params.self_signed(&key).expect("self-signed CA");
            CertificateAuthority {
                certificate_pem: certificate.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        pub fn server_certificate(&self, common_name: &str) -> IssuedCertificate {
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .expect("valid SANs");
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            self.issue(params)
        }

        pub fn client_certificate(&self, subject_alt_names: Vec<SanType>) -> IssuedCertificate {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SANs");
            params
                .distinguished_name
                .push(DnType::CommonName, "test client");
            params.subject_alt_names = subject_alt_names;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.issue(params)
        }

        fn issue(&self, params: CertificateParams) -> IssuedCertificate {
            let key = KeyPair::generate().expect("key generation works");
            let certificate = params
                .signed_by(&key, &self.issuer)
                .expect("CA signs the certificate");
            IssuedCertificate {
                certificate_pem: certificate.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_material::{touch_later, CertificateAuthority};
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(yaml, Path::new("/etc/ceems/web-config.yml"))
    }

    fn parse_error(yaml: &str) -> String {
        match parse(yaml) {
            Ok(config) => panic!("expected an error for {yaml:?}, got {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_empty_file_is_plain_http_without_auth() {
        for yaml in [
            "",
            "# nothing\n",
            "tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n",
        ] {
            let config = parse(yaml).expect("empty config is valid");
            assert!(config.tls.is_none());
            assert!(config.http2);
            assert!(config.headers.is_empty());
            assert!(config.basic_auth_users.is_empty());
        }
    }

    #[test]
    fn unknown_and_duplicate_keys_are_errors() {
        assert!(parse_error("rate_limit:\n  burst: 1\n").contains("unknown field"));
        assert!(parse_error("tls_server_config:\n  certfile: x\n").contains("unknown field"));
        assert!(parse_error("http_server_config:\n  http3: true\n").contains("unknown field"));
        assert!(
            parse_error("http_server_config:\n  http2: true\n  http2: false\n")
                .contains("duplicate")
        );
        assert!(parse_error("basic_auth_users:\n  alice: a\n  alice: b\n").contains("already set"));
        assert!(parse_error(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Frame-Options: sameorigin\n"
        )
        .contains("already set"));
        assert!(parse_error("tls_server_config: [1]\n").contains("web config file"));
    }

    #[test]
    fn headers_are_limited_to_the_allowed_names_and_values() {
        let config = parse(
            "http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n    X-Content-Type-Options: nosniff\n    X-Frame-Options: sameorigin\n    X-XSS-Protection: 1; mode=block\n    Content-Security-Policy: default-src 'self'\n",
        )
        .expect("all five headers are allowed");
        assert_eq!(config.headers.len(), 5);
        assert_eq!(config.headers["x-frame-options"], "sameorigin");
        assert_eq!(
            config.headers["strict-transport-security"],
            "max-age=31536000"
        );

        assert_eq!(
            parse_error("http_server_config:\n  headers:\n    Server: ceems\n"),
            "HTTP header \"Server\" can not be configured"
        );
        // Names are matched exactly, as in the reference.
        assert!(
            parse_error("http_server_config:\n  headers:\n    x-frame-options: deny\n")
                .contains("can not be configured")
        );
        assert!(parse_error(
            "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n"
        )
        .contains("Expected one of: [\"nosniff\"]"));
        assert!(
            parse_error("http_server_config:\n  headers:\n    X-Frame-Options: DENY\n")
                .contains("invalid value for X-Frame-Options")
        );
        assert!(
            parse_error("http_server_config:\n  headers:\n    X-XSS-Protection: \"a\\nb\"\n")
                .contains("not a valid header value")
        );
    }

    #[test]
    fn http2_reads_go_booleans() {
        assert!(
            !parse("http_server_config:\n  http2: false\n")
                .expect("valid")
                .http2
        );
        assert!(
            !parse("http_server_config:\n  http2: no\n")
                .expect("valid")
                .http2
        );
        assert!(
            parse("http_server_config:\n  http2: on\n")
                .expect("valid")
                .http2
        );
        assert!(parse_error("http_server_config:\n  http2: maybe\n").contains("boolean"));
    }

    #[test]
    fn basic_auth_users_are_read_and_hashes_checked_separately() {
        let config = parse("basic_auth_users:\n  alice: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n  bob: not-a-hash\n")
            .expect("hash format is not a parse error");
        assert_eq!(config.basic_auth_users.len(), 2);
        assert_eq!(
            config.basic_auth_users.validate_hashes(),
            Err(BasicAuthConfigError::NotBcryptHash {
                user: "bob".to_owned()
            })
        );
    }

    #[test]
    fn tls_is_on_only_when_a_tls_key_is_set_and_needs_cert_and_key() {
        let config = parse("tls_server_config:\n  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n")
            .expect("tuning alone does not turn TLS on");
        assert!(config.tls.is_none());

        assert_eq!(
            parse_error("tls_server_config:\n  cert_file: server.crt\n"),
            "tls_server_config: missing one of key or key_file"
        );
        assert_eq!(
            parse_error("tls_server_config:\n  key_file: server.key\n"),
            "tls_server_config: missing one of cert or cert_file"
        );
        assert_eq!(
            parse_error("tls_server_config:\n  client_auth_type: RequireAnyClientCert\n"),
            "tls_server_config: missing one of cert or cert_file"
        );
        assert!(
            parse_error("tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: c\n")
                .contains("cannot specify both cert_file and cert")
        );
        assert!(
            parse_error("tls_server_config:\n  cert_file: a\n  key: b\n  key_file: c\n")
                .contains("cannot specify both key_file and key")
        );
    }

    #[test]
    fn relative_files_resolve_against_the_config_directory() {
        let config = parse("tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n")
            .expect("valid TLS settings");
        let tls = config.tls.expect("TLS is on");
        assert_eq!(
            tls.certificate,
            PemSource::File(PathBuf::from("/etc/ceems/tls/server.crt"))
        );
        assert_eq!(
            tls.private_key,
            PemSource::File(PathBuf::from("/abs/server.key"))
        );
        assert_eq!(
            tls.client_ca,
            Some(PemSource::File(PathBuf::from("/etc/ceems/ca.pem")))
        );
        assert_eq!(tls.client_auth, ClientAuthType::RequireAndVerifyClientCert);
    }

    #[test]
    fn client_auth_types_and_their_rules() {
        let base = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        for (value, expected) in [
            ("NoClientCert", ClientAuthType::NoClientCert),
            ("RequestClientCert", ClientAuthType::RequestClientCert),
            ("RequireAnyClientCert", ClientAuthType::RequireAnyClientCert),
            ("RequireClientCert", ClientAuthType::RequireAnyClientCert),
        ] {
            let config = parse(&format!("{base}  client_auth_type: {value}\n")).expect("valid");
            assert_eq!(config.tls.expect("TLS on").client_auth, expected, "{value}");
        }
        for value in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
            let config = parse(&format!(
                "{base}  client_auth_type: {value}\n  client_ca_file: ca\n"
            ))
            .expect("valid with a CA");
            assert!(config.tls.expect("TLS on").client_auth.verifies_chain());
            assert!(parse_error(&format!("{base}  client_auth_type: {value}\n"))
                .contains("needs client_ca_file or client_ca"));
        }
        assert_eq!(
            parse_error(&format!("{base}  client_auth_type: Sometimes\n")),
            "tls_server_config: invalid ClientAuth: Sometimes"
        );
        assert!(parse_error(&format!("{base}  client_ca_file: ca\n"))
            .contains("without a Client Auth Policy"));
        assert!(parse_error(&format!("{base}  client_allowed_sans: [a]\n"))
            .contains("client_allowed_sans needs"));
    }

    #[test]
    fn versions_suites_and_curves_map_to_what_rustls_offers() {
        let base = "tls_server_config:\n  cert_file: a\n  key_file: b\n";
        let tls = parse(base).expect("valid").tls.expect("TLS on");
        assert_eq!(tls.protocol_versions.len(), 2);
        assert!(tls.prefer_server_cipher_suites);

        let config = parse(&format!("{base}  min_version: TLS10\n")).expect("valid");
        assert_eq!(config.adjustments.len(), 1, "{:?}", config.adjustments);
        assert!(config.adjustments[0].contains("TLS10"));
        assert_eq!(config.tls.expect("TLS on").protocol_versions.len(), 2);

        let tls = parse(&format!("{base}  min_version: TLS13\n"))
            .expect("valid")
            .tls
            .expect("on");
        assert_eq!(tls.protocol_versions, vec![&rustls::version::TLS13]);
        let tls = parse(&format!("{base}  max_version: TLS12\n"))
            .expect("valid")
            .tls
            .expect("on");
        assert_eq!(tls.protocol_versions, vec![&rustls::version::TLS12]);

        assert!(parse_error(&format!("{base}  max_version: TLS11\n")).contains("not supported"));
        assert!(parse_error(&format!(
            "{base}  min_version: TLS13\n  max_version: TLS12\n"
        ))
        .contains("above max_version"));
        assert!(
            parse_error(&format!("{base}  min_version: SSL3\n")).contains("unknown TLS version")
        );

        let tls = parse(&format!(
            "{base}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]\n"
        ))
        .expect("valid")
        .tls
        .expect("on");
        let tls12: Vec<_> = tls
            .crypto_provider
            .cipher_suites
            .iter()
            .filter(|suite| suite.version() == &rustls::version::TLS12)
            .map(|suite| suite.suite())
            .collect();
        assert_eq!(
            tls12,
            vec![rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]
        );
        assert_eq!(
            tls.crypto_provider.cipher_suites.len(),
            4,
            "three TLS 1.3 suites stay"
        );

        let config = parse(&format!(
            "{base}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"
        ))
        .expect("a known but unsupported suite is skipped");
        assert_eq!(
            config.tls.expect("on").protocol_versions,
            vec![&rustls::version::TLS13]
        );
        assert_eq!(config.adjustments.len(), 2, "{:?}", config.adjustments);
        assert!(parse_error(&format!(
            "{base}  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n"
        ))
        .contains("no protocol version"));
        assert!(parse_error(&format!(
            "{base}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"
        ))
        .contains("unknown cipher"));

        let tls = parse(&format!(
            "{base}  curve_preferences: [CurveP384, X25519, CurveP521]\n"
        ))
        .expect("valid")
        .tls
        .expect("on");
        let groups: Vec<_> = tls
            .crypto_provider
            .kx_groups
            .iter()
            .map(|group| group.name())
            .collect();
        assert_eq!(
            groups,
            vec![rustls::NamedGroup::secp384r1, rustls::NamedGroup::X25519]
        );
        assert!(
            parse_error(&format!("{base}  curve_preferences: [CurveP521]\n")).contains("no curve")
        );
        assert!(
            parse_error(&format!("{base}  curve_preferences: [Curve25519]\n"))
                .contains("unknown curve")
        );

        let tls = parse(&format!("{base}  prefer_server_cipher_suites: false\n"))
            .expect("valid")
            .tls
            .expect("on");
        assert!(!tls.prefer_server_cipher_suites);
    }

    #[test]
    fn inline_keys_are_not_printed() {
        let config =
            parse("tls_server_config:\n  cert: CERTIFICATE TEXT\n  key: VERY SECRET KEY\n")
                .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("VERY SECRET KEY"), "{shown}");
    }

    fn write_file(path: &Path, contents: &str) {
        std::fs::write(path, contents).expect("temp dir is writable");
    }

    #[test]
    fn startup_rejects_missing_files_bad_hashes_and_bad_tls_material() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("web.yml");
        assert!(matches!(
            WebConfigHandle::open(&config_path),
            Err(WebConfigError::Read { .. })
        ));

        write_file(&config_path, "basic_auth_users:\n  alice: plaintext\n");
        assert!(matches!(
            WebConfigHandle::open(&config_path),
            Err(WebConfigError::BasicAuth(_))
        ));

        write_file(
            &config_path,
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
        );
        let error = WebConfigHandle::open(&config_path).expect_err("cert file is missing");
        assert!(error.to_string().contains("missing.crt"), "{error}");

        let authority = CertificateAuthority::new("test CA");
        let server = authority.server_certificate("server");
        let other = authority.server_certificate("other");
        write_file(&dir.path().join("server.crt"), &server.certificate_pem);
        write_file(&dir.path().join("other.key"), &other.key_pem);
        write_file(
            &config_path,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
        );
        let error = WebConfigHandle::open(&config_path).expect_err("key does not match");
        assert!(
            error
                .to_string()
                .starts_with("tls_server_config: cannot load the certificate and key pair"),
            "{error}"
        );

        write_file(&dir.path().join("server.key"), &server.key_pem);
        write_file(
            &config_path,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
        );
        let handle = WebConfigHandle::open(&config_path).expect("valid TLS config");
        assert!(handle.tls_enabled_at_start());
        let active = handle.current().expect("still valid");
        assert!(active.tls_server_config().expect("TLS on").is_ok());
    }

    #[test]
    fn the_handle_follows_the_file_and_reports_invalid_versions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("web.yml");
        write_file(
            &config_path,
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        );
        let handle = WebConfigHandle::open_with_recheck_interval(&config_path, Duration::ZERO)
            .expect("valid");
        assert!(!handle.tls_enabled_at_start());
        let first = handle.current().expect("valid");
        assert_eq!(first.config().headers["x-frame-options"], "deny");

        write_file(
            &config_path,
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        );
        touch_later(&config_path);
        assert!(handle.current().is_err());

        write_file(
            &config_path,
            "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n",
        );
        touch_later(&config_path);
        let fixed = handle.current().expect("valid again");
        assert_eq!(fixed.config().headers["x-frame-options"], "sameorigin");

        std::fs::remove_file(&config_path).expect("remove");
        let error = handle.current().expect_err("the file is gone");
        assert!(matches!(*error, WebConfigError::Read { .. }), "{error}");
    }

    #[test]
    fn the_handle_does_not_look_at_the_file_more_often_than_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("web.yml");
        write_file(&config_path, "");
        let handle =
            WebConfigHandle::open_with_recheck_interval(&config_path, Duration::from_secs(3600))
                .expect("valid");
        write_file(&config_path, "not: valid\n");
        touch_later(&config_path);
        assert!(
            handle.current().is_ok(),
            "the change is seen only after the interval"
        );
    }

    #[test]
    fn subject_alt_names_are_listed_like_go() {
        use rcgen::SanType;
        let authority = CertificateAuthority::new("test CA");
        let client = authority.client_certificate(vec![
            SanType::DnsName("client.example".try_into().expect("ia5")),
            SanType::Rfc822Name("ops@example.org".try_into().expect("ia5")),
            SanType::URI("spiffe://example/client".try_into().expect("ia5")),
            SanType::IpAddress("10.1.2.3".parse().expect("ip")),
            SanType::IpAddress("::ffff:10.9.9.9".parse().expect("ip")),
            SanType::IpAddress("2001:db8::1".parse().expect("ip")),
        ]);
        let der = CertificateDer::from_pem_slice(client.certificate_pem.as_bytes()).expect("pem");
        let mut names = subject_alt_names(&der).expect("parses");
        names.sort();
        assert_eq!(
            names,
            vec![
                "10.1.2.3",
                "10.9.9.9",
                "2001:db8::1",
                "client.example",
                "ops@example.org",
                "spiffe://example/client"
            ]
        );
    }
}
