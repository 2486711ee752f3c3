//! The Prometheus-style HTTP client config (`basic_auth`, `authorization`, `oauth2`,
//! `tls_config`, proxy, `http_headers`, ...) used by `web:` sections: parsed, validated,
//! file paths resolved against the config file's directory, secrets redacted in `Debug`.
//!
//! Loading reads no file: credential and certificate files are only named here, their
//! consumers read them (so a rotated secret is picked up without a restart).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::node::{optional_field, KeyPath, Node};
use super::ConfigError;

/// Text that must never reach a log: `Debug` prints `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<secret>")
    }
}

/// An absolute URL (`scheme://host...`), checked at load. `Debug` hides a password in the
/// user-info part (`http://user:<secret>@host/`), since operators put credentials there.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientUrl(String);

impl ClientUrl {
    /// Checks that `text` is an absolute URL with a host.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|error| format!("invalid URL {:?}: {error}", redact_url(text)))?;
        if uri.scheme().is_none() {
            return Err(format!(
                "invalid URL {:?}: a scheme such as http:// is required",
                redact_url(text)
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("invalid URL {:?}: no host", redact_url(text)));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", redact_url(&self.0))
    }
}

/// Replaces the password of `scheme://user:password@host` with `<secret>`.
fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = text[authority_start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |offset| authority_start + offset);
    let authority = &text[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let user_info = &authority[..at];
    let Some(colon) = user_info.find(':') else {
        return text.to_owned();
    };
    format!(
        "{}{}:<secret>{}",
        &text[..authority_start],
        &user_info[..colon],
        &text[authority_start + at..]
    )
}

/// A `web:` section: a URL plus the client config inline beside it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebClientConfig {
    /// `None` when absent or empty (for an updater: disabled).
    pub url: Option<ClientUrl>,
    pub client: HttpClientConfig,
}

/// Prometheus' `HTTPClientConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpClientConfig {
    pub basic_auth: Option<BasicAuth>,
    /// Also holds the older `bearer_token`/`bearer_token_file` keys, as Prometheus
    /// converts them.
    pub authorization: Option<Authorization>,
    pub oauth2: Option<OAuth2Config>,
    pub tls_config: TlsConfig,
    pub proxy: ProxyConfig,
    /// Default true.
    pub follow_redirects: bool,
    /// Default true.
    pub enable_http2: bool,
    /// Header name (as written) to its values.
    pub http_headers: BTreeMap<String, HttpHeader>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            basic_auth: None,
            authorization: None,
            oauth2: None,
            tls_config: TlsConfig::default(),
            proxy: ProxyConfig::default(),
            follow_redirects: true,
            enable_http2: true,
            http_headers: BTreeMap::new(),
        }
    }
}

impl HttpClientConfig {
    /// Every file the client will read, for start-up checks and access grants.
    pub fn file_paths(&self) -> Vec<&Path> {
        let mut paths: Vec<&Path> = Vec::new();
        if let Some(basic_auth) = &self.basic_auth {
            paths.extend(basic_auth.username_file.as_deref());
            paths.extend(basic_auth.password_file.as_deref());
        }
        if let Some(authorization) = &self.authorization {
            paths.extend(authorization.credentials_file.as_deref());
        }
        if let Some(oauth2) = &self.oauth2 {
            paths.extend(oauth2.client_secret_file.as_deref());
            paths.extend(oauth2.tls_config.file_paths());
        }
        paths.extend(self.tls_config.file_paths());
        for header in self.http_headers.values() {
            paths.extend(header.files.iter().map(PathBuf::as_path));
        }
        paths
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BasicAuth {
    pub username: String,
    pub username_file: Option<PathBuf>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    /// The scheme, `Bearer` unless set.
    pub kind: String,
    pub credentials: Option<Secret>,
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OAuth2Config {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Vec<String>,
    pub token_url: Option<ClientUrl>,
    pub endpoint_params: BTreeMap<String, String>,
    pub tls_config: TlsConfig,
    pub proxy: ProxyConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "TLS10" => Some(Self::Tls10),
            "TLS11" => Some(Self::Tls11),
            "TLS12" => Some(Self::Tls12),
            "TLS13" => Some(Self::Tls13),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// Inline PEM.
    pub ca: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Inline PEM.
    pub cert: Option<String>,
    pub cert_file: Option<PathBuf>,
    /// Inline PEM private key.
    pub key: Option<Secret>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

impl TlsConfig {
    fn file_paths(&self) -> impl Iterator<Item = &Path> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .filter_map(|path| path.as_deref())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    pub proxy_url: Option<ClientUrl>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: bool,
    pub proxy_connect_header: BTreeMap<String, Vec<Secret>>,
}

/// One `http_headers` entry: plain values, secret values and files holding values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpHeader {
    pub values: Vec<String>,
    pub secrets: Vec<Secret>,
    pub files: Vec<PathBuf>,
}

/// Headers the client sets itself; Prometheus refuses them in `http_headers`.
const RESERVED_HEADERS: [&str; 18] = [
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-prometheus-scrape-timeout-seconds",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// A non-empty string, or `None` for absent or `""`.
fn non_empty_string(parent: &Node<'_>, key: &str) -> Result<Option<String>, ConfigError> {
    Ok(optional_field(parent, key, |node| node.string())?.filter(|text| !text.is_empty()))
}

fn secret(parent: &Node<'_>, key: &str) -> Result<Option<Secret>, ConfigError> {
    Ok(non_empty_string(parent, key)?.map(Secret))
}

/// A file path, made absolute against the config file's directory.
fn file_path(
    parent: &Node<'_>,
    key: &str,
    base_dir: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    Ok(non_empty_string(parent, key)?.map(|text| base_dir.join(text)))
}

fn url(parent: &Node<'_>, key: &str) -> Result<Option<ClientUrl>, ConfigError> {
    match non_empty_string(parent, key)? {
        None => Ok(None),
        Some(text) => ClientUrl::parse(&text)
            .map(Some)
            .map_err(|message| parent.path().key(key).error(message)),
    }
}

fn boolean(parent: &Node<'_>, key: &str, default: bool) -> Result<bool, ConfigError> {
    Ok(optional_field(parent, key, |node| node.boolean())?.unwrap_or(default))
}

/// Runs `read` on the mapping at `key` when it is present and not null.
fn section<T>(
    parent: &Node<'_>,
    key: &str,
    read: impl FnOnce(&Node<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    optional_field(parent, key, |node| {
        node.mapping()?;
        read(&node)
    })
}

fn mutually_exclusive(
    path: &KeyPath,
    first: (&str, bool),
    second: (&str, bool),
) -> Result<(), ConfigError> {
    if first.1 && second.1 {
        return Err(path.error(format!(
            "at most one of {} and {} may be set",
            first.0, second.0
        )));
    }
    Ok(())
}

/// Reads a `web:` mapping: `url` plus the client config.
pub(crate) fn parse_web_client_config(
    node: &Node<'_>,
    base_dir: &Path,
) -> Result<WebClientConfig, ConfigError> {
    node.mapping()?;
    Ok(WebClientConfig {
        url: url(node, "url")?,
        client: parse_http_client_config(node, base_dir)?,
    })
}

/// Reads the client keys of a mapping (other keys, such as `url`, are left to the caller).
pub(crate) fn parse_http_client_config(
    node: &Node<'_>,
    base_dir: &Path,
) -> Result<HttpClientConfig, ConfigError> {
    let path = node.path();
    let basic_auth = section(node, "basic_auth", |auth| {
        let username = non_empty_string(auth, "username")?;
        let username_file = file_path(auth, "username_file", base_dir)?;
        let password = secret(auth, "password")?;
        let password_file = file_path(auth, "password_file", base_dir)?;
        let auth_path = auth.path();
        mutually_exclusive(
            auth_path,
            ("username", username.is_some()),
            ("username_file", username_file.is_some()),
        )?;
        mutually_exclusive(
            auth_path,
            ("password", password.is_some()),
            ("password_file", password_file.is_some()),
        )?;
        Ok(BasicAuth {
            username: username.unwrap_or_default(),
            username_file,
            password,
            password_file,
        })
    })?;

    let authorization = section(node, "authorization", |auth| {
        let kind = optional_field(auth, "type", |node| node.string())?
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .unwrap_or_else(|| "Bearer".to_owned());
        if kind.eq_ignore_ascii_case("basic") {
            return Err(auth
                .path()
                .key("type")
                .error("type cannot be \"Basic\": use basic_auth instead"));
        }
        let credentials = secret(auth, "credentials")?;
        let credentials_file = file_path(auth, "credentials_file", base_dir)?;
        mutually_exclusive(
            auth.path(),
            ("credentials", credentials.is_some()),
            ("credentials_file", credentials_file.is_some()),
        )?;
        Ok(Authorization {
            kind,
            credentials,
            credentials_file,
        })
    })?;

    let bearer_token = secret(node, "bearer_token")?;
    let bearer_token_file = file_path(node, "bearer_token_file", base_dir)?;
    mutually_exclusive(
        path,
        ("bearer_token", bearer_token.is_some()),
        ("bearer_token_file", bearer_token_file.is_some()),
    )?;
    let has_bearer = bearer_token.is_some() || bearer_token_file.is_some();
    if has_bearer && authorization.is_some() {
        return Err(
            path.error("authorization cannot be combined with bearer_token or bearer_token_file")
        );
    }
    let authorization = authorization.or_else(|| {
        has_bearer.then(|| Authorization {
            kind: "Bearer".to_owned(),
            credentials: bearer_token,
            credentials_file: bearer_token_file,
        })
    });

    let oauth2 = section(node, "oauth2", |oauth2| {
        let oauth2_path = oauth2.path();
        let client_id = non_empty_string(oauth2, "client_id")?
            .ok_or_else(|| oauth2_path.key("client_id").error("must be set"))?;
        let token_url = url(oauth2, "token_url")?;
        if token_url.is_none() {
            return Err(oauth2_path.key("token_url").error("must be set"));
        }
        let client_secret = secret(oauth2, "client_secret")?;
        let client_secret_file = file_path(oauth2, "client_secret_file", base_dir)?;
        mutually_exclusive(
            oauth2_path,
            ("client_secret", client_secret.is_some()),
            ("client_secret_file", client_secret_file.is_some()),
        )?;
        Ok(OAuth2Config {
            client_id,
            client_secret,
            client_secret_file,
            scopes: optional_field(oauth2, "scopes", |node| node.string_list())?
                .unwrap_or_default(),
            token_url,
            endpoint_params: optional_field(oauth2, "endpoint_params", |node| node.string_map())?
                .unwrap_or_default(),
            tls_config: section(oauth2, "tls_config", |tls| parse_tls_config(tls, base_dir))?
                .unwrap_or_default(),
            proxy: parse_proxy_config(oauth2)?,
        })
    })?;

    let authentication_methods = [
        basic_auth.is_some(),
        authorization.is_some(),
        oauth2.is_some(),
    ];
    if authentication_methods.iter().filter(|set| **set).count() > 1 {
        return Err(path.error(
            "at most one of basic_auth, authorization (or bearer_token) and oauth2 may be set",
        ));
    }

    Ok(HttpClientConfig {
        basic_auth,
        authorization,
        oauth2,
        tls_config: section(node, "tls_config", |tls| parse_tls_config(tls, base_dir))?
            .unwrap_or_default(),
        proxy: parse_proxy_config(node)?,
        follow_redirects: boolean(node, "follow_redirects", true)?,
        enable_http2: boolean(node, "enable_http2", true)?,
        http_headers: parse_http_headers(node, base_dir)?,
    })
}

fn parse_tls_config(node: &Node<'_>, base_dir: &Path) -> Result<TlsConfig, ConfigError> {
    let path = node.path();
    let version = |key: &str| -> Result<Option<TlsVersion>, ConfigError> {
        match non_empty_string(node, key)? {
            None => Ok(None),
            Some(text) => TlsVersion::parse(&text).map(Some).ok_or_else(|| {
                path.key(key).error(format!(
                    "unknown TLS version {text:?} (expected TLS10, TLS11, TLS12 or TLS13)"
                ))
            }),
        }
    };
    let config = TlsConfig {
        ca: non_empty_string(node, "ca")?,
        ca_file: file_path(node, "ca_file", base_dir)?,
        cert: non_empty_string(node, "cert")?,
        cert_file: file_path(node, "cert_file", base_dir)?,
        key: secret(node, "key")?,
        key_file: file_path(node, "key_file", base_dir)?,
        server_name: non_empty_string(node, "server_name")?,
        insecure_skip_verify: boolean(node, "insecure_skip_verify", false)?,
        min_version: version("min_version")?,
        max_version: version("max_version")?,
    };
    mutually_exclusive(
        path,
        ("ca", config.ca.is_some()),
        ("ca_file", config.ca_file.is_some()),
    )?;
    mutually_exclusive(
        path,
        ("cert", config.cert.is_some()),
        ("cert_file", config.cert_file.is_some()),
    )?;
    mutually_exclusive(
        path,
        ("key", config.key.is_some()),
        ("key_file", config.key_file.is_some()),
    )?;
    let has_cert = config.cert.is_some() || config.cert_file.is_some();
    let has_key = config.key.is_some() || config.key_file.is_some();
    if has_cert && !has_key {
        return Err(path.error("a client certificate needs a key (key or key_file)"));
    }
    if has_key && !has_cert {
        return Err(path.error("a client key needs a certificate (cert or cert_file)"));
    }
    if let (Some(min), Some(max)) = (config.min_version, config.max_version) {
        if min > max {
            return Err(path.error("min_version is greater than max_version"));
        }
    }
    Ok(config)
}

fn parse_proxy_config(node: &Node<'_>) -> Result<ProxyConfig, ConfigError> {
    let path = node.path();
    let proxy_connect_header = match node.get("proxy_connect_header")? {
        None => BTreeMap::new(),
        Some(value) => {
            let headers_path = path.key("proxy_connect_header");
            let headers = Node::new(value, &headers_path).entries()?;
            let mut map = BTreeMap::new();
            for (name, values) in headers {
                let header_path = headers_path.key(&name);
                let values = Node::new(values, &header_path).string_list()?;
                map.insert(name, values.into_iter().map(Secret).collect());
            }
            map
        }
    };
    let config = ProxyConfig {
        proxy_url: url(node, "proxy_url")?,
        no_proxy: non_empty_string(node, "no_proxy")?,
        proxy_from_environment: boolean(node, "proxy_from_environment", false)?,
        proxy_connect_header,
    };
    if config.proxy_from_environment && config.proxy_url.is_some() {
        return Err(path.error("at most one of proxy_url and proxy_from_environment may be set"));
    }
    if config.proxy_from_environment && config.no_proxy.is_some() {
        return Err(path.error("no_proxy cannot be combined with proxy_from_environment"));
    }
    if config.no_proxy.is_some() && config.proxy_url.is_none() {
        return Err(path.error("no_proxy needs proxy_url"));
    }
    if !config.proxy_connect_header.is_empty()
        && config.proxy_url.is_none()
        && !config.proxy_from_environment
    {
        return Err(path.error("proxy_connect_header needs proxy_url or proxy_from_environment"));
    }
    Ok(config)
}

fn parse_http_headers(
    node: &Node<'_>,
    base_dir: &Path,
) -> Result<BTreeMap<String, HttpHeader>, ConfigError> {
    let Some(value) = node.get("http_headers")? else {
        return Ok(BTreeMap::new());
    };
    let headers_path = node.path().key("http_headers");
    let headers = Node::new(value, &headers_path).entries()?;
    let mut map = BTreeMap::new();
    for (name, header) in headers {
        let header_path = headers_path.key(&name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(header_path.error("not a valid HTTP header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(
                header_path.error("this header is set by the client and cannot be configured")
            );
        }
        let header_node = Node::new(header, &header_path);
        header_node.mapping()?;
        let list = |key: &str| -> Result<Vec<String>, ConfigError> {
            Ok(optional_field(&header_node, key, |node| node.string_list())?.unwrap_or_default())
        };
        map.insert(
            name,
            HttpHeader {
                values: list("values")?,
                secrets: list("secrets")?.into_iter().map(Secret).collect(),
                files: list("files")?
                    .into_iter()
                    .map(|file| base_dir.join(file))
                    .collect(),
            },
        );
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_web(text: &str) -> Result<WebClientConfig, ConfigError> {
        let value: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("web");
        parse_web_client_config(&Node::new(&value, &path), Path::new("/etc/ceems"))
    }

    fn error_of(text: &str) -> String {
        parse_web(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_redirects_and_http2() {
        let config = parse_web("{}").unwrap();
        assert_eq!(config.url, None);
        assert!(config.client.follow_redirects);
        assert!(config.client.enable_http2);
        assert_eq!(config.client, HttpClientConfig::default());
    }

    #[test]
    fn every_key_parses_and_files_resolve_against_the_config_directory() {
        let config = parse_web(
            r#"
url: https://grafana.example.com:3000/sub
basic_auth:
  username: admin
  password_file: secrets/password
follow_redirects: false
enable_http2: no
tls_config:
  ca_file: ca.pem
  cert_file: /abs/cert.pem
  key_file: key.pem
  server_name: grafana.internal
  insecure_skip_verify: true
  min_version: TLS12
  max_version: TLS13
proxy_url: http://proxy.example.com:3128
no_proxy: localhost
proxy_connect_header:
  Proxy-Token: [token]
http_headers:
  X-Scope-OrgID:
    values: [tenant-1]
  X-Api-Key:
    secrets: [key-1]
  X-From-File:
    files: [headers/a]
unknown_key: ignored
"#,
        )
        .unwrap();
        assert_eq!(
            config.url.as_ref().map(ClientUrl::as_str),
            Some("https://grafana.example.com:3000/sub")
        );
        let client = &config.client;
        let basic_auth = client.basic_auth.as_ref().unwrap();
        assert_eq!(basic_auth.username, "admin");
        assert_eq!(
            basic_auth.password_file.as_deref(),
            Some(Path::new("/etc/ceems/secrets/password"))
        );
        assert!(!client.follow_redirects);
        assert!(!client.enable_http2);
        let tls = &client.tls_config;
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/ceems/ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/abs/cert.pem")));
        assert_eq!(
            tls.key_file.as_deref(),
            Some(Path::new("/etc/ceems/key.pem"))
        );
        assert_eq!(tls.server_name.as_deref(), Some("grafana.internal"));
        assert!(tls.insecure_skip_verify);
        assert_eq!(tls.min_version, Some(TlsVersion::Tls12));
        assert_eq!(tls.max_version, Some(TlsVersion::Tls13));
        assert_eq!(
            client.proxy.proxy_url.as_ref().map(ClientUrl::as_str),
            Some("http://proxy.example.com:3128")
        );
        assert_eq!(client.proxy.no_proxy.as_deref(), Some("localhost"));
        assert_eq!(
            client.proxy.proxy_connect_header["Proxy-Token"][0].expose(),
            "token"
        );
        assert_eq!(client.http_headers["X-Scope-OrgID"].values, ["tenant-1"]);
        assert_eq!(
            client.http_headers["X-Api-Key"].secrets[0].expose(),
            "key-1"
        );
        assert_eq!(
            client.http_headers["X-From-File"].files,
            [PathBuf::from("/etc/ceems/headers/a")]
        );
        assert_eq!(client.file_paths().len(), 5);
    }

    #[test]
    fn bearer_token_becomes_authorization() {
        let config = parse_web("bearer_token: abc").unwrap();
        let authorization = config.client.authorization.unwrap();
        assert_eq!(authorization.kind, "Bearer");
        assert_eq!(authorization.credentials.unwrap().expose(), "abc");

        let config = parse_web("authorization: {type: ' Token ', credentials_file: cred}").unwrap();
        let authorization = config.client.authorization.unwrap();
        assert_eq!(authorization.kind, "Token");
        assert_eq!(
            authorization.credentials_file.as_deref(),
            Some(Path::new("/etc/ceems/cred"))
        );
    }

    #[test]
    fn oauth2_parses() {
        let config = parse_web(
            "oauth2: {client_id: ceems, client_secret: s3cr3t, token_url: 'https://idp/token', scopes: [a, b], endpoint_params: {aud: x}}",
        )
        .unwrap();
        let oauth2 = config.client.oauth2.unwrap();
        assert_eq!(oauth2.client_id, "ceems");
        assert_eq!(oauth2.scopes, ["a", "b"]);
        assert_eq!(oauth2.endpoint_params["aud"], "x");
    }

    #[test]
    fn each_invalid_combination_is_one_error_naming_the_key() {
        let cases = [
            (
                "basic_auth: {username: a, password: b, password_file: c}",
                "config: web.basic_auth: at most one of password and password_file may be set",
            ),
            (
                "basic_auth: {username: a, username_file: b}",
                "config: web.basic_auth: at most one of username and username_file may be set",
            ),
            (
                "authorization: {credentials: a, credentials_file: b}",
                "config: web.authorization: at most one of credentials and credentials_file may be set",
            ),
            (
                "authorization: {type: basic, credentials: a}",
                "config: web.authorization.type: type cannot be \"Basic\": use basic_auth instead",
            ),
            (
                "bearer_token: a\nbearer_token_file: b",
                "config: web: at most one of bearer_token and bearer_token_file may be set",
            ),
            (
                "bearer_token: a\nauthorization: {credentials: b}",
                "config: web: authorization cannot be combined with bearer_token or bearer_token_file",
            ),
            (
                "basic_auth: {username: a}\nauthorization: {credentials: b}",
                "config: web: at most one of basic_auth, authorization (or bearer_token) and oauth2 may be set",
            ),
            (
                "oauth2: {token_url: 'http://idp/'}",
                "config: web.oauth2.client_id: must be set",
            ),
            (
                "oauth2: {client_id: a}",
                "config: web.oauth2.token_url: must be set",
            ),
            (
                "oauth2: {client_id: a, token_url: 'http://idp/', client_secret: b, client_secret_file: c}",
                "config: web.oauth2: at most one of client_secret and client_secret_file may be set",
            ),
            (
                "tls_config: {ca: x, ca_file: y}",
                "config: web.tls_config: at most one of ca and ca_file may be set",
            ),
            (
                "tls_config: {cert: x, cert_file: y, key: z}",
                "config: web.tls_config: at most one of cert and cert_file may be set",
            ),
            (
                "tls_config: {cert_file: x, key: y, key_file: z}",
                "config: web.tls_config: at most one of key and key_file may be set",
            ),
            (
                "tls_config: {cert_file: x}",
                "config: web.tls_config: a client certificate needs a key (key or key_file)",
            ),
            (
                "tls_config: {key_file: x}",
                "config: web.tls_config: a client key needs a certificate (cert or cert_file)",
            ),
            (
                "tls_config: {min_version: TLS9}",
                "config: web.tls_config.min_version: unknown TLS version \"TLS9\" (expected TLS10, TLS11, TLS12 or TLS13)",
            ),
            (
                "tls_config: {min_version: TLS13, max_version: TLS12}",
                "config: web.tls_config: min_version is greater than max_version",
            ),
            (
                "tls_config: {insecure_skip_verify: sometimes}",
                "config: web.tls_config.insecure_skip_verify: expected a boolean, found \"sometimes\"",
            ),
            (
                "proxy_url: http://p:1\nproxy_from_environment: true",
                "config: web: at most one of proxy_url and proxy_from_environment may be set",
            ),
            ("no_proxy: localhost", "config: web: no_proxy needs proxy_url"),
            (
                "proxy_connect_header: {A: [b]}",
                "config: web: proxy_connect_header needs proxy_url or proxy_from_environment",
            ),
            (
                "proxy_url: 'not a url'",
                "config: web.proxy_url: invalid URL \"not a url\": invalid uri character",
            ),
            (
                "url: grafana:3000",
                "config: web.url: invalid URL \"grafana:3000\": a scheme such as http:// is required",
            ),
            (
                "http_headers: {Authorization: {values: [x]}}",
                "config: web.http_headers.Authorization: this header is set by the client and cannot be configured",
            ),
            (
                "http_headers: {'Bad Header': {values: [x]}}",
                "config: web.http_headers.Bad Header: not a valid HTTP header name",
            ),
            (
                "http_headers: {X-A: [x]}",
                "config: web.http_headers.X-A: expected a mapping, found a list",
            ),
            ("basic_auth: [a]", "config: web.basic_auth: expected a mapping, found a list"),
        ];
        for (text, expected) in cases {
            assert_eq!(error_of(text), expected, "for {text:?}");
        }
    }

    #[test]
    fn debug_output_hides_every_secret() {
        let config = parse_web(
            r#"
url: https://admin:url-password@grafana.example.com/
basic_auth: {username: admin, password: basic-password}
tls_config: {cert: CERT, key: private-key-pem}
proxy_url: http://user:proxy-password@proxy:3128
proxy_connect_header: {Proxy-Token: [proxy-header-secret]}
http_headers:
  X-Api-Key: {secrets: [header-secret], values: [visible-value]}
"#,
        )
        .unwrap();
        let debug = format!("{config:?}");
        for secret in [
            "url-password",
            "basic-password",
            "private-key-pem",
            "proxy-password",
            "proxy-header-secret",
            "header-secret",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
        assert!(debug.contains("visible-value"));
        assert!(debug.contains("https://admin:<secret>@grafana.example.com/"));
        let bearer = parse_web("authorization: {credentials: bearer-secret}").unwrap();
        assert!(!format!("{bearer:?}").contains("bearer-secret"));
        let oauth2 = parse_web(
            "oauth2: {client_id: a, client_secret: oauth-secret, token_url: 'http://idp/'}",
        )
        .unwrap();
        assert!(!format!("{oauth2:?}").contains("oauth-secret"));
    }

    #[test]
    fn urls_are_redacted_only_in_their_password() {
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
        assert_eq!(redact_url("http://user@host/"), "http://user@host/");
        assert_eq!(
            redact_url("http://user:pw@host:80/x?y=1"),
            "http://user:<secret>@host:80/x?y=1"
        );
        assert_eq!(redact_url("no scheme"), "no scheme");
    }
}
