//! Outgoing HTTP clients: turns a Prometheus-style [`HttpClientConfig`] (basic auth,
//! authorization, `http_headers`, `tls_config`, proxy, redirects) into a `reqwest::Client`
//! over rustls with the ring provider.
//!
//! Credential and certificate files are read when the client is built, so a caller that
//! wants rotated files picked up builds a new client (the TSDB updater does so for every
//! update when its config names files).

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{HttpClientConfig, TlsConfig, TlsVersion};

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request, body included, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Redirects followed when `follow_redirects` is on (Go's limit).
const MAX_REDIRECTS: usize = 10;

/// Why a client could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {what} file {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not supported by this server")]
    Unsupported(&'static str),
    #[error("invalid value for header {name}: {reason}")]
    InvalidHeader { name: String, reason: String },
    #[error("tls_config: {0}")]
    Tls(String),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Builds a client that sends `user_agent`, the configured credentials and headers on every
/// request, verifies servers as `tls_config` says, and gives up on a connection after 10 s
/// and on a request after 2 min.
pub fn build_http_client(
    config: &HttpClientConfig,
    user_agent: &str,
) -> Result<reqwest::Client, ClientError> {
    if config.oauth2.is_some() {
        return Err(ClientError::Unsupported("oauth2"));
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .default_headers(default_headers(config)?)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(if config.follow_redirects {
            reqwest::redirect::Policy::limited(MAX_REDIRECTS)
        } else {
            reqwest::redirect::Policy::none()
        })
        .tls_backend_preconfigured(rustls_client_config(
            &config.tls_config,
            config.enable_http2,
        )?);
    if !config.enable_http2 {
        builder = builder.http1_only();
    }
    builder = configure_proxy(builder, config)?;
    builder
        .build()
        .map_err(|error| ClientError::Build(error_chain(&error)))
}

/// Authorization (basic or typed) and `http_headers`, as headers sent with every request.
fn default_headers(config: &HttpClientConfig) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    if let Some(basic_auth) = &config.basic_auth {
        let username = match &basic_auth.username_file {
            Some(path) => read_trimmed("basic_auth username", path)?,
            None => basic_auth.username.clone(),
        };
        let password = match (&basic_auth.password, &basic_auth.password_file) {
            (_, Some(path)) => read_trimmed("basic_auth password", path)?,
            (Some(password), None) => password.expose().to_owned(),
            (None, None) => String::new(),
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        headers.insert(
            AUTHORIZATION,
            sensitive_value("Authorization", &format!("Basic {encoded}"))?,
        );
    }
    if let Some(authorization) = &config.authorization {
        let credentials = match (&authorization.credentials, &authorization.credentials_file) {
            (_, Some(path)) => Some(read_trimmed("authorization credentials", path)?),
            (Some(credentials), None) => Some(credentials.expose().to_owned()),
            (None, None) => None,
        };
        // As in Prometheus, a scheme without credentials sends no header.
        if let Some(credentials) = credentials {
            headers.insert(
                AUTHORIZATION,
                sensitive_value(
                    "Authorization",
                    &format!("{} {credentials}", authorization.kind),
                )?,
            );
        }
    }
    for (name, header) in &config.http_headers {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|error| invalid(name, error))?;
        let mut values: Vec<String> = header.values.clone();
        values.extend(
            header
                .secrets
                .iter()
                .map(|secret| secret.expose().to_owned()),
        );
        for path in &header.files {
            values.push(read_trimmed("http_headers", path)?);
        }
        if values.is_empty() {
            continue;
        }
        // One line with the values joined by ", " (HTTP's list form): the client sends
        // only the first of several default values of one name.
        let mut value =
            HeaderValue::from_str(&values.join(", ")).map_err(|error| invalid(name, error))?;
        value.set_sensitive(!header.secrets.is_empty() || !header.files.is_empty());
        headers.insert(header_name, value);
    }
    Ok(headers)
}

fn invalid(name: &str, error: impl fmt::Display) -> ClientError {
    ClientError::InvalidHeader {
        name: name.to_owned(),
        reason: error.to_string(),
    }
}

/// A header value kept out of debug output and HTTP/2 header compression tables.
fn sensitive_value(name: &str, text: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(text).map_err(|error| invalid(name, error))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A credential file's content without surrounding white space (Prometheus trims them).
fn read_trimmed(what: &'static str, path: &Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| ClientError::ReadFile {
            what,
            path: path.to_owned(),
            source,
        })
}

fn read_bytes(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn configure_proxy(
    builder: reqwest::ClientBuilder,
    config: &HttpClientConfig,
) -> Result<reqwest::ClientBuilder, ClientError> {
    let proxy_config = &config.proxy;
    let mut connect_headers = HeaderMap::new();
    for (name, values) in &proxy_config.proxy_connect_header {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|error| invalid(name, error))?;
        if values.is_empty() {
            continue;
        }
        let joined: Vec<&str> = values.iter().map(|value| value.expose()).collect();
        connect_headers.insert(header_name, sensitive_value(name, &joined.join(", "))?);
    }
    if let Some(url) = &proxy_config.proxy_url {
        let mut proxy = reqwest::Proxy::all(url.as_str())
            .map_err(|error| ClientError::Proxy(error_chain(&error)))?;
        if let Some(no_proxy) = &proxy_config.no_proxy {
            proxy = proxy.no_proxy(reqwest::NoProxy::from_string(no_proxy));
        }
        if !connect_headers.is_empty() {
            proxy = proxy.headers(connect_headers);
        }
        return Ok(builder.proxy(proxy));
    }
    if proxy_config.proxy_from_environment {
        if !connect_headers.is_empty() {
            return Err(ClientError::Unsupported(
                "proxy_connect_header with proxy_from_environment",
            ));
        }
        // reqwest reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY when no proxy is set.
        return Ok(builder);
    }
    Ok(builder.no_proxy())
}

/// The rustls side of `tls_config`: trusted roots (`ca`/`ca_file`, else the system's),
/// client certificate, `server_name`, `insecure_skip_verify` and the version range.
fn rustls_client_config(
    tls: &TlsConfig,
    enable_http2: bool,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = protocol_versions(tls)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|error| ClientError::Tls(error.to_string()))?;

    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyServerCertificate {
            provider: provider.clone(),
        })
    } else {
        let roots = root_store(tls)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        match &tls.server_name {
            Some(name) => Arc::new(ExpectedServerName {
                inner: webpki,
                name: ServerName::try_from(name.clone())
                    .map_err(|error| ClientError::Tls(format!("server_name {name:?}: {error}")))?,
            }),
            None => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let mut client_config = match client_certificate(tls)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|error| ClientError::Tls(format!("client certificate: {error}")))?,
        None => builder.with_no_client_auth(),
    };
    client_config.alpn_protocols = if enable_http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(client_config)
}

/// rustls speaks TLS 1.2 and 1.3: a lower `min_version` means 1.2, a `max_version` below
/// 1.2 leaves nothing to speak.
fn protocol_versions(
    tls: &TlsConfig,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, ClientError> {
    let min = tls.min_version.unwrap_or(TlsVersion::Tls12);
    let max = tls.max_version.unwrap_or(TlsVersion::Tls13);
    let mut versions = Vec::new();
    if min <= TlsVersion::Tls12 && max >= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(ClientError::Tls(
            "max_version below TLS12: only TLS 1.2 and 1.3 are supported".to_owned(),
        ));
    }
    Ok(versions)
}

fn root_store(tls: &TlsConfig) -> Result<RootCertStore, ClientError> {
    let pem = match (&tls.ca, &tls.ca_file) {
        (_, Some(path)) => Some(read_bytes("CA", path)?),
        (Some(ca), None) => Some(ca.as_bytes().to_vec()),
        (None, None) => None,
    };
    let mut store = RootCertStore::empty();
    match pem {
        Some(pem) => {
            let certificates = parse_certificates(&pem, "ca")?;
            let (added, _ignored) = store.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(ClientError::Tls("ca: no usable certificate".to_owned()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(%error, "skipping a system CA certificate source");
            }
            let (added, _ignored) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!("no system CA certificates found: HTTPS servers cannot be verified");
            }
        }
    }
    Ok(store)
}

fn parse_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certificates: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(pem))
            .collect::<Result<_, _>>()
            .map_err(|error| ClientError::Tls(format!("{what}: {error}")))?;
    if certificates.is_empty() {
        return Err(ClientError::Tls(format!(
            "{what}: no PEM certificate found"
        )));
    }
    Ok(certificates)
}

type ClientCertificate = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_certificate(tls: &TlsConfig) -> Result<Option<ClientCertificate>, ClientError> {
    let cert_pem = match (&tls.cert, &tls.cert_file) {
        (_, Some(path)) => read_bytes("certificate", path)?,
        (Some(cert), None) => cert.as_bytes().to_vec(),
        (None, None) => return Ok(None),
    };
    let key_pem = match (&tls.key, &tls.key_file) {
        (_, Some(path)) => read_bytes("key", path)?,
        (Some(key), None) => key.expose().as_bytes().to_vec(),
        (None, None) => return Err(ClientError::Tls("cert given without a key".to_owned())),
    };
    let chain = parse_certificates(&cert_pem, "cert")?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
        .map_err(|error| ClientError::Tls(format!("key: {error}")))?
        .ok_or_else(|| ClientError::Tls("key: no PEM private key found".to_owned()))?;
    Ok(Some((chain, key)))
}

/// Verifies the server's chain against the roots and its name against `server_name`
/// instead of the URL's host.
#[derive(Debug)]
struct ExpectedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for ExpectedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate and name are accepted; the handshake signatures
/// are still checked, so the connection is at least bound to the presented key.
#[derive(Debug)]
struct AcceptAnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An error and its causes on one line (`a: b: c`).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{Authorization, BasicAuth, ClientUrl, HttpHeader, OAuth2Config, Secret};
    use crate::http::web_config::test_material::CertificateAuthority;

    /// What the loopback server saw of one request.
    #[derive(Debug)]
    struct SeenRequest {
        uri: String,
        headers: http::HeaderMap,
    }

    /// Serves HTTP/1 on 127.0.0.1 (over TLS when given a config): `/redirect` answers 302
    /// to `/`, everything else 200 `ok`. Every request is reported on the channel.
    async fn serve(
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<SeenRequest>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = mpsc::unbounded_channel();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sender = sender.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let sender = sender.clone();
                        async move {
                            let request: hyper::Request<hyper::body::Incoming> = request;
                            let _ = sender.send(SeenRequest {
                                uri: request.uri().to_string(),
                                headers: request.headers().clone(),
                            });
                            let mut response = hyper::Response::new(Full::new(Bytes::from("ok")));
                            if request.uri().path() == "/redirect" {
                                *response.status_mut() = hyper::StatusCode::FOUND;
                                response
                                    .headers_mut()
                                    .insert("location", HeaderValue::from_static("/"));
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        (address, receiver)
    }

    fn install_provider() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn header_values(headers: &http::HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn credentials_and_headers_are_sent_with_every_request() {
        install_provider();
        let directory = tempfile::tempdir().unwrap();
        let password_file = directory.path().join("password");
        std::fs::write(&password_file, "s3cret\n").unwrap();
        let header_file = directory.path().join("tenant");
        std::fs::write(&header_file, "  from-file \n").unwrap();
        let config = HttpClientConfig {
            basic_auth: Some(BasicAuth {
                username: "alice".to_owned(),
                password_file: Some(password_file),
                ..BasicAuth::default()
            }),
            http_headers: BTreeMap::from([(
                "X-Scope-OrgID".to_owned(),
                HttpHeader {
                    values: vec!["plain".to_owned()],
                    secrets: vec![Secret::new("hidden")],
                    files: vec![header_file],
                },
            )]),
            ..HttpClientConfig::default()
        };
        let client = build_http_client(&config, "ceems/test").unwrap();
        let (address, mut seen) = serve(None).await;
        for _ in 0..2 {
            let response = client
                .get(format!("http://{address}/api/v1/query"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let request = seen.recv().await.unwrap();
            assert_eq!(
                header_values(&request.headers, "authorization"),
                ["Basic YWxpY2U6czNjcmV0"],
                "base64 of alice:s3cret"
            );
            assert_eq!(
                header_values(&request.headers, "user-agent"),
                ["ceems/test"]
            );
            assert_eq!(
                header_values(&request.headers, "x-scope-orgid"),
                ["plain, hidden, from-file"]
            );
        }
    }

    #[tokio::test]
    async fn authorization_uses_its_type_and_credentials_file() {
        install_provider();
        let directory = tempfile::tempdir().unwrap();
        let token_file = directory.path().join("token");
        std::fs::write(&token_file, "abc.def\n").unwrap();
        let config = HttpClientConfig {
            authorization: Some(Authorization {
                kind: "Bearer".to_owned(),
                credentials: None,
                credentials_file: Some(token_file),
            }),
            ..HttpClientConfig::default()
        };
        let client = build_http_client(&config, "ceems/test").unwrap();
        let (address, mut seen) = serve(None).await;
        client
            .get(format!("http://{address}/"))
            .send()
            .await
            .unwrap();
        let request = seen.recv().await.unwrap();
        assert_eq!(
            header_values(&request.headers, "authorization"),
            ["Bearer abc.def"]
        );

        let inline = HttpClientConfig {
            authorization: Some(Authorization {
                kind: "Token".to_owned(),
                credentials: Some(Secret::new("xyz")),
                credentials_file: None,
            }),
            ..HttpClientConfig::default()
        };
        let client = build_http_client(&inline, "ceems/test").unwrap();
        client
            .get(format!("http://{address}/"))
            .send()
            .await
            .unwrap();
        let request = seen.recv().await.unwrap();
        assert_eq!(
            header_values(&request.headers, "authorization"),
            ["Token xyz"]
        );
    }

    #[test]
    fn unsupported_and_unreadable_settings_are_errors() {
        install_provider();
        let oauth2 = HttpClientConfig {
            oauth2: Some(OAuth2Config {
                client_id: "id".to_owned(),
                ..OAuth2Config::default()
            }),
            ..HttpClientConfig::default()
        };
        assert_eq!(
            build_http_client(&oauth2, "ceems/test")
                .unwrap_err()
                .to_string(),
            "oauth2 is not supported by this server"
        );
        let missing = HttpClientConfig {
            authorization: Some(Authorization {
                kind: "Bearer".to_owned(),
                credentials: None,
                credentials_file: Some(PathBuf::from("/nonexistent/token")),
            }),
            ..HttpClientConfig::default()
        };
        let message = build_http_client(&missing, "ceems/test")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("cannot read authorization credentials file /nonexistent/token: "),
            "{message}"
        );
        let too_old = HttpClientConfig {
            tls_config: TlsConfig {
                max_version: Some(TlsVersion::Tls11),
                ..TlsConfig::default()
            },
            ..HttpClientConfig::default()
        };
        assert_eq!(
            build_http_client(&too_old, "ceems/test")
                .unwrap_err()
                .to_string(),
            "tls_config: max_version below TLS12: only TLS 1.2 and 1.3 are supported"
        );
    }

    #[test]
    fn version_range_maps_to_rustls_versions() {
        let range = |min, max| {
            protocol_versions(&TlsConfig {
                min_version: min,
                max_version: max,
                ..TlsConfig::default()
            })
            .unwrap()
            .iter()
            .map(|version| version.version)
            .collect::<Vec<_>>()
        };
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(range(None, None), [TLSv1_2, TLSv1_3]);
        assert_eq!(range(Some(TlsVersion::Tls10), None), [TLSv1_2, TLSv1_3]);
        assert_eq!(range(Some(TlsVersion::Tls13), None), [TLSv1_3]);
        assert_eq!(range(None, Some(TlsVersion::Tls12)), [TLSv1_2]);
    }

    #[tokio::test]
    async fn redirects_are_followed_only_when_asked() {
        install_provider();
        let (address, _seen) = serve(None).await;
        let follow = build_http_client(&HttpClientConfig::default(), "ceems/test").unwrap();
        let response = follow
            .get(format!("http://{address}/redirect"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let stay = build_http_client(
            &HttpClientConfig {
                follow_redirects: false,
                ..HttpClientConfig::default()
            },
            "ceems/test",
        )
        .unwrap();
        let response = stay
            .get(format!("http://{address}/redirect"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
    }

    #[tokio::test]
    async fn requests_go_through_the_configured_proxy() {
        install_provider();
        let (proxy_address, mut seen) = serve(None).await;
        let mut config = HttpClientConfig::default();
        config.proxy.proxy_url =
            Some(ClientUrl::parse(&format!("http://{proxy_address}")).unwrap());
        let client = build_http_client(&config, "ceems/test").unwrap();
        // Nothing listens on the target: only the proxy can answer.
        let response = client
            .get("http://prometheus.invalid:9090/api/v1/query?query=up")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let request = seen.recv().await.unwrap();
        assert_eq!(
            request.uri,
            "http://prometheus.invalid:9090/api/v1/query?query=up"
        );

        config.proxy.no_proxy = Some("127.0.0.1".to_owned());
        let client = build_http_client(&config, "ceems/test").unwrap();
        let (direct_address, mut direct_seen) = serve(None).await;
        client
            .get(format!("http://{direct_address}/direct"))
            .send()
            .await
            .unwrap();
        assert_eq!(direct_seen.recv().await.unwrap().uri, "/direct");
        assert!(seen.try_recv().is_err(), "no_proxy hosts bypass the proxy");
    }

    /// A TLS server config with a certificate for localhost/127.0.0.1 issued by `authority`,
    /// requiring a client certificate from the same authority when `require_client` is set.
    fn tls_server(
        authority: &CertificateAuthority,
        require_client: bool,
    ) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let issued = authority.server_certificate("server");
        let chain = parse_certificates(issued.certificate_pem.as_bytes(), "cert").unwrap();
        let key = rustls_pemfile::private_key(&mut BufReader::new(issued.key_pem.as_bytes()))
            .unwrap()
            .unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(
                parse_certificates(authority.certificate_pem.as_bytes(), "ca").unwrap(),
            );
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }

    async fn get_status(config: &HttpClientConfig, url: &str) -> Result<u16, String> {
        let client = build_http_client(config, "ceems/test").map_err(|error| error.to_string())?;
        client
            .get(url)
            .send()
            .await
            .map(|response| response.status().as_u16())
            .map_err(|error| error_chain(&error))
    }

    #[tokio::test]
    async fn tls_trusts_the_configured_ca_and_checks_names() {
        install_provider();
        let authority = CertificateAuthority::new("test CA");
        let (address, _seen) = serve(Some(tls_server(&authority, false))).await;
        let url = format!("https://127.0.0.1:{}/", address.port());
        let directory = tempfile::tempdir().unwrap();
        let ca_file = directory.path().join("ca.pem");
        std::fs::write(&ca_file, &authority.certificate_pem).unwrap();

        let with_ca = |tls: TlsConfig| HttpClientConfig {
            tls_config: TlsConfig {
                ca_file: Some(ca_file.clone()),
                ..tls
            },
            ..HttpClientConfig::default()
        };
        assert_eq!(
            get_status(&with_ca(TlsConfig::default()), &url).await,
            Ok(200)
        );
        let inline_ca = HttpClientConfig {
            tls_config: TlsConfig {
                ca: Some(authority.certificate_pem.clone()),
                ..TlsConfig::default()
            },
            ..HttpClientConfig::default()
        };
        assert_eq!(get_status(&inline_ca, &url).await, Ok(200));
        // The system roots do not know the test CA.
        let untrusted = get_status(&HttpClientConfig::default(), &url)
            .await
            .unwrap_err();
        assert!(
            untrusted.contains("invalid peer certificate: UnknownIssuer"),
            "{untrusted}"
        );
        // server_name replaces the URL's host in the name check.
        let named = with_ca(TlsConfig {
            server_name: Some("localhost".to_owned()),
            ..TlsConfig::default()
        });
        assert_eq!(get_status(&named, &url).await, Ok(200));
        let misnamed = with_ca(TlsConfig {
            server_name: Some("prometheus.example".to_owned()),
            ..TlsConfig::default()
        });
        let error = get_status(&misnamed, &url).await.unwrap_err();
        assert!(
            error.contains("certificate not valid for name \"prometheus.example\""),
            "{error}"
        );
        let insecure = HttpClientConfig {
            tls_config: TlsConfig {
                insecure_skip_verify: true,
                ..TlsConfig::default()
            },
            ..HttpClientConfig::default()
        };
        assert_eq!(get_status(&insecure, &url).await, Ok(200));
    }

    #[tokio::test]
    async fn tls_client_certificate_is_presented() {
        install_provider();
        let authority = CertificateAuthority::new("test CA");
        let (address, _seen) = serve(Some(tls_server(&authority, true))).await;
        let url = format!("https://127.0.0.1:{}/", address.port());
        let client_certificate = authority.client_certificate(Vec::new());
        let directory = tempfile::tempdir().unwrap();
        let cert_file = directory.path().join("client.pem");
        let key_file = directory.path().join("client.key");
        std::fs::write(&cert_file, &client_certificate.certificate_pem).unwrap();
        std::fs::write(&key_file, &client_certificate.key_pem).unwrap();
        let without = HttpClientConfig {
            tls_config: TlsConfig {
                ca: Some(authority.certificate_pem.clone()),
                ..TlsConfig::default()
            },
            ..HttpClientConfig::default()
        };
        assert!(get_status(&without, &url).await.is_err());
        let with = HttpClientConfig {
            tls_config: TlsConfig {
                cert_file: Some(cert_file),
                key_file: Some(key_file),
                ..without.tls_config.clone()
            },
            ..HttpClientConfig::default()
        };
        assert_eq!(get_status(&with, &url).await, Ok(200));
        let inline = HttpClientConfig {
            tls_config: TlsConfig {
                cert: Some(client_certificate.certificate_pem.clone()),
                key: Some(Secret::new(client_certificate.key_pem.clone())),
                ..without.tls_config.clone()
            },
            ..HttpClientConfig::default()
        };
        assert_eq!(get_status(&inline, &url).await, Ok(200));
    }
}
