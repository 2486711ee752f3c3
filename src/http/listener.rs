//! The transport around the application service: binding Go-style listen addresses, the
//! accept loops, optional TLS, HTTP/1.1 and HTTP/2 connections, the web config's 500,
//! basic auth and headers, the router's path-cleaning 301, time limits and graceful
//! shutdown (api.md §1, §2, §3.3).
//!
//! Order for every request: peer address into the extensions → web config (500 when it is
//! invalid now) → basic auth (401) → path cleaning (301) → the application, within the
//! request time limit → configured headers added to whatever response came out, unless the
//! response already has them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use super::path_clean;
use super::web_config::WebConfigHandle;
use super::PeerAddr;

/// Errors the application service and response bodies may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the transport sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Time limits of the transport. `Default` gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// HTTP/1 request line and headers must arrive within this time. hyper also applies it
    /// to the wait for the next request on a kept-alive connection, so it is the idle
    /// timeout too: the reference's (its 10 s read timeout), not its 2 s header limit, or
    /// clients reusing a pooled connection after 2 s race its closing (a load benchmark
    /// saw "error sending request").
    pub header_read_timeout: Duration,
    /// TLS handshake limit (reference: the smallest of its timeouts, 2 s).
    pub tls_handshake_timeout: Duration,
    /// A connection that has not sent a complete request after this long is closed
    /// (reference: its 10 s read timeout). Covers the protocol detection, which has no
    /// timeout of its own.
    pub first_request_timeout: Duration,
    /// Limit for the application to produce a response; then the client gets a 503.
    /// Generous, for long queries (reference: 5 min on the slow routes).
    pub request_time_limit: Duration,
    /// After shutdown starts, in-flight requests get this long to finish.
    pub shutdown_grace_period: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(2),
            first_request_timeout: Duration::from_secs(10),
            request_time_limit: Duration::from_secs(5 * 60),
            shutdown_grace_period: Duration::from_secs(5),
        }
    }
}

/// Binds every address, Go style: `:9020` (all interfaces, IPv4 and IPv6),
/// `127.0.0.1:0`, `[::1]:9020`, `localhost:9020` (a name listens on one of its addresses,
/// IPv4 preferred, as Go does).
pub async fn bind(addresses: &[String]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        let listener = bind_listen_address(address).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot listen on {address:?}: {error}"),
            )
        })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn bind_listen_address(address: &str) -> io::Result<TcpListener> {
    let (host, port) = split_host_port(address)?;
    if host.is_empty() {
        return bind_all_interfaces(port);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return TcpListener::bind(SocketAddr::new(ip, port)).await;
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let chosen = resolved
        .iter()
        .find(|candidate| candidate.is_ipv4())
        .or_else(|| resolved.first())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
    TcpListener::bind(*chosen).await
}

/// Go's `net.SplitHostPort`, with a numeric port.
fn split_host_port(address: &str) -> io::Result<(&str, u16)> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
        let (host, rest) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("missing ']' in address"))?;
        let port = rest
            .strip_prefix(':')
            .ok_or_else(|| invalid("missing port in address"))?;
        (host, port)
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| invalid("missing port in address"))?;
        if host.contains(':') {
            return Err(invalid(
                "too many colons in address (write IPv6 hosts in brackets)",
            ));
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .map_err(|_not_a_port| invalid("invalid port"))?;
    Ok((host, port))
}

/// One dual-stack socket when IPv6 exists, as Go listens for an empty host; IPv4 only
/// otherwise.
fn bind_all_interfaces(port: u16) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual_stack = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_only_v6(false)?;
        Ok(socket)
    };
    let (socket, address) = match dual_stack() {
        Ok(socket) => (socket, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))),
        Err(_no_ipv6) => (
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ),
    };
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Serves `app` on every listener until `shutdown` resolves, with the production
/// `ServeOptions`. `app` is typically `warp::service(filter)`.
pub async fn serve<S, B>(
    listeners: Vec<TcpListener>,
    web: Option<WebConfigHandle>,
    app: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_with_options(listeners, web, app, shutdown, ServeOptions::default()).await
}

/// `serve` with explicit time limits.
///
/// When `shutdown` resolves: the listeners close, idle connections close, in-flight
/// requests get `shutdown_grace_period` to finish, then whatever is left is dropped and
/// this returns.
pub async fn serve_with_options<S, B>(
    listeners: Vec<TcpListener>,
    web: Option<WebConfigHandle>,
    app: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if listeners.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listen address to serve on",
        ));
    }
    let transport = Arc::new(Transport::new(web, options));
    let (shutdown_sender, shutdown_receiver) = watch::channel(false);
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        let address = listener.local_addr()?;
        tracing::info!(%address, tls = transport.tls, "listening");
        accept_loops.spawn(accept_loop(
            listener,
            Arc::clone(&transport),
            app.clone(),
            shutdown_receiver.clone(),
        ));
    }

    let mut outcome = Ok(());
    tokio::select! {
        () = shutdown => {}
        Some(ended) = accept_loops.join_next() => {
            // Accept loops only end after shutdown; one that ends earlier has panicked.
            tracing::error!(outcome = ?ended, "an accept loop ended unexpectedly; stopping the server");
            outcome = Err(io::Error::other("an accept loop ended unexpectedly"));
        }
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    // Ignored error: every receiver is gone only when every loop already ended.
    let _ = shutdown_sender.send(true);
    while let Some(ended) = accept_loops.join_next().await {
        if let Err(join_error) = ended {
            tracing::error!(error = %join_error, "accept loop failed during shutdown");
        }
    }
    outcome
}

/// What every connection of a server shares.
struct Transport {
    web: Option<WebConfigHandle>,
    options: ServeOptions,
    /// Decided from the web config at startup, like the reference.
    tls: bool,
    /// HTTP/1.1 plus HTTP/2 with prior knowledge (plain connections).
    http1_and_http2: auto::Builder<TokioExecutor>,
    http1_only: auto::Builder<TokioExecutor>,
    http2_only: auto::Builder<TokioExecutor>,
}

impl Transport {
    fn new(web: Option<WebConfigHandle>, options: ServeOptions) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        Transport {
            tls: web
                .as_ref()
                .is_some_and(WebConfigHandle::tls_enabled_at_start),
            web,
            options,
            http1_only: builder.clone().http1_only(),
            http2_only: builder.clone().http2_only(),
            http1_and_http2: builder,
        }
    }

    /// Whether the current web config allows HTTP/2 (no file: yes).
    fn http2_allowed(&self) -> bool {
        match &self.web {
            None => true,
            Some(handle) => handle
                .current()
                .map(|active| active.config().http2)
                .unwrap_or(false),
        }
    }
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    transport: Arc<Transport>,
    app: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut connections = JoinSet::new();
    if !*shutdown.borrow_and_update() {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            Arc::clone(&transport),
                            app.clone(),
                            shutdown.clone(),
                        ));
                    }
                    Err(error) if is_per_connection_error(&error) => {
                        tracing::debug!(%error, "accept failed for one connection");
                    }
                    Err(error) => {
                        // Typically out of file descriptors: wait instead of spinning.
                        tracing::warn!(%error, "accept failed; retrying shortly");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            while connections.try_join_next().is_some() {}
        }
    }
    drop(listener);

    let grace = tokio::time::sleep(transport.options.shutdown_grace_period);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = connections.join_next() => {
                if next.is_none() {
                    break;
                }
            }
            () = &mut grace => {
                tracing::warn!(
                    connections = connections.len(),
                    "shutdown grace period over; closing the remaining connections"
                );
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
}

fn is_per_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    transport: Arc<Transport>,
    app: S,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // Small responses go out at once instead of waiting for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    if !transport.tls {
        let builder = if transport.http2_allowed() {
            &transport.http1_and_http2
        } else {
            &transport.http1_only
        };
        drive_connection(builder, stream, peer, &transport, app, shutdown).await;
        return;
    }

    let handshake = tokio::time::timeout(
        transport.options.tls_handshake_timeout,
        tls_handshake(stream, &transport),
    );
    let tls_stream = tokio::select! {
        outcome = handshake => match outcome {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = shutdown.changed() => return,
    };
    let negotiated_h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let builder = if negotiated_h2 {
        &transport.http2_only
    } else {
        &transport.http1_only
    };
    drive_connection(builder, tls_stream, peer, &transport, app, shutdown).await;
}

/// The server config is taken per handshake from the web config as it is now, so that
/// certificate rotation and an invalid file both take effect for new connections.
async fn tls_handshake(
    stream: TcpStream,
    transport: &Transport,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let handle = transport
        .web
        .as_ref()
        .ok_or_else(|| io::Error::other("TLS listener without a web config"))?;
    let active = handle
        .current()
        .map_err(|error| io::Error::other(format!("web config is invalid: {error}")))?;
    let server_config = active
        .tls_server_config()
        .ok_or_else(|| io::Error::other("the web config no longer configures TLS"))?
        .map_err(|error| io::Error::other(error.to_string()))?;
    start.into_stream(server_config).await
}

async fn drive_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    peer: SocketAddr,
    transport: &Arc<Transport>,
    app: S,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let request_seen = Arc::new(AtomicBool::new(false));
    let service = {
        let transport = Arc::clone(transport);
        let request_seen = Arc::clone(&request_seen);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            request_seen.store(true, Ordering::Relaxed);
            handle_request(Arc::clone(&transport), app.clone(), peer, request)
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let first_request_deadline = tokio::time::sleep(transport.options.first_request_timeout);
    tokio::pin!(first_request_deadline);
    let mut first_request_checked = false;
    let mut draining = *shutdown.borrow_and_update();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            outcome = connection.as_mut() => {
                if let Err(error) = outcome {
                    // Client hang-ups, malformed requests, header timeouts.
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut first_request_deadline, if !first_request_checked => {
                first_request_checked = true;
                if !request_seen.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request on a new connection in time; closing it");
                    return;
                }
            }
        }
    }
}

async fn handle_request<S, B>(
    transport: Arc<Transport>,
    app: S,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    request.extensions_mut().insert(PeerAddr(peer));
    let Some(handle) = transport.web.as_ref() else {
        return Ok(route_request(&transport, app, request).await);
    };
    let active = match handle.current() {
        Ok(active) => active,
        Err(error) => {
            tracing::debug!(%peer, %error, "web config invalid: answering 500");
            return Ok(plain_text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error\n",
            ));
        }
    };
    let config = active.config();
    let mut response = if config.basic_auth_users.is_empty() {
        route_request(&transport, app, request).await
    } else {
        let verified = handle
            .basic_auth()
            .verify(
                &config.basic_auth_users,
                request.headers().get(header::AUTHORIZATION),
            )
            .await;
        match verified {
            Ok(()) => route_request(&transport, app, request).await,
            Err(rejection) => {
                tracing::debug!(%peer, %rejection, "basic auth failed");
                unauthorized_response()
            }
        }
    };
    // The reference sets these before its handler runs, so a handler's own value wins.
    for (name, value) in &config.headers {
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(response)
}

/// Path cleaning, then the application within the time limit.
async fn route_request<S, B>(
    transport: &Transport,
    mut app: S,
    request: Request<Incoming>,
) -> Response<ResponseBody>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(location) = path_clean::redirect_location(request.uri()) {
        if let Ok(location) = HeaderValue::from_str(&location) {
            return moved_permanently_response(location);
        }
    }
    let called = async move {
        std::future::poll_fn(|context| app.poll_ready(context)).await?;
        app.call(request).await
    };
    match tokio::time::timeout(transport.options.request_time_limit, called).await {
        Ok(Ok(response)) => response.map(|body| body.map_err(Into::into).boxed_unsync()),
        Ok(Err(error)) => {
            let error: BoxError = error.into();
            tracing::error!(%error, "the application failed to answer");
            plain_text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
        Err(_elapsed) => {
            tracing::warn!(
                limit = ?transport.options.request_time_limit,
                "request exceeded the time limit"
            );
            plain_text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
        }
    }
}

fn full_body(bytes: &'static [u8]) -> ResponseBody {
    Full::new(Bytes::from_static(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What Go's `http.Error` writes.
fn plain_text_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body.as_bytes()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn unauthorized_response() -> Response<ResponseBody> {
    let mut response = plain_text_response(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    response
}

fn moved_permanently_response(location: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(b""));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::web_config::test_material::{
        touch_later, CertificateAuthority, IssuedCertificate,
    };
    use std::path::{Path, PathBuf};
    use warp::Filter as _;

    /// A small application: a few routes that show what the transport did.
    fn test_app() -> impl warp::Filter<Extract = (impl warp::Reply,), Error = warp::Rejection>
           + Clone
           + Send
           + Sync
           + 'static {
        let hello = warp::path!("hello").map(|| "hello");
        let peer = warp::path!("peer")
            .and(warp::ext::get::<PeerAddr>())
            .map(|peer: PeerAddr| peer.0.ip().to_string());
        let own_header = warp::path!("own-header")
            .map(|| warp::reply::with_header("app", "X-Frame-Options", "from-app"));
        let slow = warp::path!("slow").then(|| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "slow done"
        });
        let hang = warp::path!("hang").then(|| async {
            std::future::pending::<()>().await;
            "never"
        });
        hello.or(peer).or(own_header).or(slow).or(hang)
    }

    struct TestServer {
        address: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl TestServer {
        async fn start(web: Option<WebConfigHandle>, options: ServeOptions) -> Self {
            let listeners = bind(&["127.0.0.1:0".to_owned()])
                .await
                .expect("bind loopback");
            let address = listeners[0].local_addr().expect("bound address");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve_with_options(
                listeners,
                web,
                warp::service(test_app()),
                async move {
                    let _ = stopped.await;
                },
                options,
            ));
            TestServer {
                address,
                stop: Some(stop),
                task,
            }
        }

        fn http_url(&self, path: &str) -> String {
            format!("http://{}{path}", self.address)
        }

        fn https_url(&self, path: &str) -> String {
            format!("https://localhost:{}{path}", self.address.port())
        }

        async fn stop(mut self) -> io::Result<()> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(Duration::from_secs(10), &mut self.task)
                .await
                .expect("server stops in time")
                .expect("server task does not panic")
        }
    }

    fn client_tls_config(
        trusted: Option<&CertificateAuthority>,
        client_certificate: Option<&IssuedCertificate>,
        alpn: &[&[u8]],
    ) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        if let Some(authority) = trusted {
            roots
                .add(
                    CertificateDer::from_pem_slice(authority.certificate_pem.as_bytes())
                        .expect("CA PEM"),
                )
                .expect("CA is a valid root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots);
        let mut config = match client_certificate {
            None => builder.with_no_client_auth(),
            Some(issued) => builder
                .with_client_auth_cert(
                    vec![
                        CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes())
                            .expect("client cert PEM"),
                    ],
                    PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                        .expect("client key PEM"),
                )
                .expect("client cert and key match"),
        };
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        config
    }

    fn http_client(tls: rustls::ClientConfig) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds")
    }

    fn plain_client() -> reqwest::Client {
        http_client(client_tls_config(None, None, &[b"http/1.1"]))
    }

    fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash(password, 4).expect("bcrypt at cost 4")
    }

    fn write_web_config(dir: &Path, yaml: &str) -> PathBuf {
        let path = dir.join("web-config.yml");
        std::fs::write(&path, yaml).expect("write web config");
        touch_later(&path);
        path
    }

    fn write_server_material(dir: &Path, issued: &IssuedCertificate) {
        std::fs::write(dir.join("server.crt"), &issued.certificate_pem).expect("write cert");
        std::fs::write(dir.join("server.key"), &issued.key_pem).expect("write key");
        touch_later(&dir.join("server.crt"));
        touch_later(&dir.join("server.key"));
    }

    fn quick_reload_handle(path: &Path) -> WebConfigHandle {
        WebConfigHandle::open_with_recheck_interval(path, Duration::ZERO).expect("valid web config")
    }

    #[tokio::test]
    async fn plain_http_without_web_config_serves_the_app_with_the_peer_address() {
        let server = TestServer::start(None, ServeOptions::default()).await;
        let client = plain_client();
        let response = client
            .get(server.http_url("/hello"))
            .send()
            .await
            .expect("GET /hello");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "hello");
        let peer = client
            .get(server.http_url("/peer"))
            .send()
            .await
            .expect("GET /peer");
        assert_eq!(peer.text().await.expect("body"), "127.0.0.1");
        let missing = client
            .get(server.http_url("/nothing"))
            .send()
            .await
            .expect("GET");
        assert_eq!(missing.status(), 404);
        server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn basic_auth_guards_everything_and_caches_successes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_web_config(
            dir.path(),
            &format!(
                "basic_auth_users:\n  alice: {}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=60\n",
                bcrypt_hash("alice-secret")
            ),
        );
        let handle = quick_reload_handle(&path);
        let server = TestServer::start(Some(handle.clone()), ServeOptions::default()).await;
        let client = plain_client();
        let url = server.http_url("/hello");

        let cases: [(&str, Option<(&str, &str)>); 3] = [
            ("missing header", None),
            ("wrong password", Some(("alice", "bob-secret"))),
            ("unknown user", Some(("mallory", "alice-secret"))),
        ];
        for (case, credentials) in cases {
            let mut request = client.get(&url);
            if let Some((user, password)) = credentials {
                request = request.basic_auth(user, Some(password));
            }
            let response = request.send().await.expect("request completes");
            assert_eq!(response.status(), 401, "{case}");
            let headers = response.headers();
            assert_eq!(headers["www-authenticate"], "Basic", "{case}");
            assert_eq!(
                headers["content-type"], "text/plain; charset=utf-8",
                "{case}"
            );
            assert_eq!(
                headers["x-frame-options"], "deny",
                "{case}: configured headers on 401"
            );
            assert_eq!(headers["strict-transport-security"], "max-age=60", "{case}");
            assert_eq!(
                response.text().await.expect("body"),
                "Unauthorized\n",
                "{case}"
            );
        }
        // A preflight without credentials is refused too: auth precedes routing and CORS.
        let preflight = client
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", "https://example.org")
            .send()
            .await
            .expect("OPTIONS completes");
        assert_eq!(preflight.status(), 401);

        let runs_before = handle.basic_auth().bcrypt_verification_count();
        for _ in 0..3 {
            let response = client
                .get(&url)
                .basic_auth("alice", Some("alice-secret"))
                .send()
                .await
                .expect("authorised GET");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-frame-options"], "deny");
        }
        assert_eq!(
            handle.basic_auth().bcrypt_verification_count() - runs_before,
            1,
            "three requests, one bcrypt"
        );

        // The app's own header wins over the configured one; 404s get the headers too.
        let own = client
            .get(server.http_url("/own-header"))
            .basic_auth("alice", Some("alice-secret"))
            .send()
            .await
            .expect("GET /own-header");
        assert_eq!(own.headers()["x-frame-options"], "from-app");
        let missing = client
            .get(server.http_url("/nothing"))
            .basic_auth("alice", Some("alice-secret"))
            .send()
            .await
            .expect("GET /nothing");
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.headers()["strict-transport-security"], "max-age=60");
        server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn unclean_paths_get_a_301_after_auth() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_web_config(
            dir.path(),
            &format!(
                "basic_auth_users:\n  alice: {}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
                bcrypt_hash("pw")
            ),
        );
        let server =
            TestServer::start(Some(quick_reload_handle(&path)), ServeOptions::default()).await;
        let client = plain_client();

        let unauthenticated = client
            .get(server.http_url("//hello?x=1"))
            .send()
            .await
            .expect("GET");
        assert_eq!(unauthenticated.status(), 401);

        let redirected = client
            .get(server.http_url("/a/..//hello/./?x=1&y=2"))
            .basic_auth("alice", Some("pw"))
            .send()
            .await
            .expect("GET");
        assert_eq!(redirected.status(), 301);
        assert_eq!(redirected.headers()["location"], "/hello/?x=1&y=2");
        assert_eq!(redirected.headers()["x-content-type-options"], "nosniff");
        assert!(redirected.headers().get("content-type").is_none());
        assert_eq!(redirected.text().await.expect("body"), "");

        let clean = client
            .get(server.http_url("/hello?x=1"))
            .basic_auth("alice", Some("pw"))
            .send()
            .await
            .expect("GET");
        assert_eq!(clean.status(), 200);
        server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn an_invalid_web_config_after_start_gives_500_until_fixed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_web_config(
            dir.path(),
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
        );
        let server =
            TestServer::start(Some(quick_reload_handle(&path)), ServeOptions::default()).await;
        let client = plain_client();
        let url = server.http_url("/hello");
        assert_eq!(client.get(&url).send().await.expect("GET").status(), 200);

        write_web_config(dir.path(), "http_server_config:\n  unknown_key: 1\n");
        let broken = client.get(&url).send().await.expect("GET");
        assert_eq!(broken.status(), 500);
        assert_eq!(
            broken.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert!(broken.headers().get("x-frame-options").is_none());
        assert_eq!(
            broken.text().await.expect("body"),
            "Internal Server Error\n"
        );

        write_web_config(
            dir.path(),
            "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n",
        );
        let fixed = client.get(&url).send().await.expect("GET");
        assert_eq!(fixed.status(), 200);
        assert_eq!(fixed.headers()["x-frame-options"], "sameorigin");
        server.stop().await.expect("clean stop");
    }

    /// A raw TLS connection, to look at what the handshake negotiated.
    async fn tls_connect(
        address: SocketAddr,
        config: rustls::ClientConfig,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(address).await?;
        let server_name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|error| io::Error::other(error.to_string()))?;
        let mut tls_stream = connector.connect(server_name, stream).await?;
        // With TLS 1.3 a refused client certificate shows only on the first read.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tls_stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut first_byte = [0u8; 1];
        let read = tls_stream.read(&mut first_byte).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed without answer",
            ));
        }
        Ok(tls_stream)
    }

    struct TlsFixture {
        _dir: tempfile::TempDir,
        authority: CertificateAuthority,
        server: TestServer,
    }

    async fn tls_fixture(extra_tls_settings: &str, http_server_config: &str) -> TlsFixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let authority = CertificateAuthority::new("test CA");
        write_server_material(dir.path(), &authority.server_certificate("server one"));
        std::fs::write(dir.path().join("ca.pem"), &authority.certificate_pem).expect("write CA");
        let path = write_web_config(
            dir.path(),
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra_tls_settings}{http_server_config}"
            ),
        );
        let server =
            TestServer::start(Some(quick_reload_handle(&path)), ServeOptions::default()).await;
        TlsFixture {
            _dir: dir,
            authority,
            server,
        }
    }

    #[tokio::test]
    async fn tls_serves_https_and_offers_h2_unless_disabled() {
        let fixture = tls_fixture("", "").await;
        let client = http_client(client_tls_config(
            Some(&fixture.authority),
            None,
            &[b"http/1.1"],
        ));
        let response = client
            .get(fixture.server.https_url("/hello"))
            .send()
            .await
            .expect("GET over TLS");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "hello");
        // Plain HTTP on a TLS listener does not get an answer.
        assert!(plain_client()
            .get(fixture.server.http_url("/hello"))
            .send()
            .await
            .is_err());

        let h2_offer = client_tls_config(Some(&fixture.authority), None, &[b"h2", b"http/1.1"]);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(h2_offer.clone()));
        let stream = TcpStream::connect(fixture.server.address)
            .await
            .expect("connect");
        let tls_stream = connector
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                stream,
            )
            .await
            .expect("handshake");
        assert_eq!(
            tls_stream.get_ref().1.alpn_protocol(),
            Some(b"h2".as_slice())
        );
        let h2_response = http_client(h2_offer)
            .get(fixture.server.https_url("/peer"))
            .send()
            .await
            .expect("GET over HTTP/2");
        assert_eq!(h2_response.version(), reqwest::Version::HTTP_2);
        assert_eq!(h2_response.text().await.expect("body"), "127.0.0.1");
        fixture.server.stop().await.expect("clean stop");

        let fixture = tls_fixture("", "http_server_config:\n  http2: false\n").await;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls_config(
            Some(&fixture.authority),
            None,
            &[b"h2", b"http/1.1"],
        )));
        let stream = TcpStream::connect(fixture.server.address)
            .await
            .expect("connect");
        let tls_stream = connector
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                stream,
            )
            .await
            .expect("handshake");
        assert_eq!(
            tls_stream.get_ref().1.alpn_protocol(),
            Some(b"http/1.1".as_slice())
        );
        fixture.server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn require_and_verify_client_cert_refuses_missing_and_foreign_certificates() {
        let fixture = tls_fixture(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
            "",
        )
        .await;
        let address = fixture.server.address;
        let authority = &fixture.authority;
        let good_client = authority.client_certificate(vec![]);
        let foreign_client = CertificateAuthority::new("other CA").client_certificate(vec![]);

        assert!(
            tls_connect(address, client_tls_config(Some(authority), None, &[]))
                .await
                .is_err()
        );
        assert!(tls_connect(
            address,
            client_tls_config(Some(authority), Some(&foreign_client), &[])
        )
        .await
        .is_err());
        tls_connect(
            address,
            client_tls_config(Some(authority), Some(&good_client), &[]),
        )
        .await
        .expect("a client certificate from the CA is accepted");

        let client = http_client(client_tls_config(
            Some(authority),
            Some(&good_client),
            &[b"http/1.1"],
        ));
        let response = client
            .get(fixture.server.https_url("/hello"))
            .send()
            .await
            .expect("GET with client certificate");
        assert_eq!(response.status(), 200);
        fixture.server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn allowed_sans_and_unverified_client_certificates() {
        use rcgen::SanType;
        let fixture = tls_fixture(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [allowed.example, ops@example.org]\n",
            "",
        )
        .await;
        let address = fixture.server.address;
        let authority = &fixture.authority;
        let allowed_dns = authority.client_certificate(vec![SanType::DnsName(
            "allowed.example".try_into().expect("ia5"),
        )]);
        let allowed_email = authority.client_certificate(vec![SanType::Rfc822Name(
            "ops@example.org".try_into().expect("ia5"),
        )]);
        let other = authority.client_certificate(vec![SanType::DnsName(
            "other.example".try_into().expect("ia5"),
        )]);
        for (case, certificate) in [("DNS SAN", &allowed_dns), ("e-mail SAN", &allowed_email)] {
            tls_connect(
                address,
                client_tls_config(Some(authority), Some(certificate), &[]),
            )
            .await
            .unwrap_or_else(|error| panic!("{case} is allowed: {error}"));
        }
        assert!(tls_connect(
            address,
            client_tls_config(Some(authority), Some(&other), &[])
        )
        .await
        .is_err());
        fixture.server.stop().await.expect("clean stop");

        let fixture = tls_fixture("  client_auth_type: RequireAnyClientCert\n", "").await;
        let self_made = CertificateAuthority::new("anyone").client_certificate(vec![]);
        tls_connect(
            fixture.server.address,
            client_tls_config(Some(&fixture.authority), Some(&self_made), &[]),
        )
        .await
        .expect("any client certificate is accepted");
        assert!(tls_connect(
            fixture.server.address,
            client_tls_config(Some(&fixture.authority), None, &[])
        )
        .await
        .is_err());
        fixture.server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn optional_client_certificates() {
        let fixture = tls_fixture(
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n",
            "",
        )
        .await;
        let (address, authority) = (fixture.server.address, &fixture.authority);
        let good_client = authority.client_certificate(vec![]);
        let foreign_client = CertificateAuthority::new("other CA").client_certificate(vec![]);
        tls_connect(address, client_tls_config(Some(authority), None, &[]))
            .await
            .expect("no certificate is fine");
        tls_connect(
            address,
            client_tls_config(Some(authority), Some(&good_client), &[]),
        )
        .await
        .expect("a certificate from the CA is fine");
        assert!(tls_connect(
            address,
            client_tls_config(Some(authority), Some(&foreign_client), &[])
        )
        .await
        .is_err());
        fixture.server.stop().await.expect("clean stop");

        let fixture = tls_fixture("  client_auth_type: RequestClientCert\n", "").await;
        let (address, authority) = (fixture.server.address, &fixture.authority);
        tls_connect(address, client_tls_config(Some(authority), None, &[]))
            .await
            .expect("no certificate is fine");
        tls_connect(
            address,
            client_tls_config(Some(authority), Some(&foreign_client), &[]),
        )
        .await
        .expect("any certificate is fine");
        fixture.server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn rotated_certificates_and_a_broken_config_apply_to_new_handshakes() {
        let fixture = tls_fixture("", "").await;
        let dir = fixture._dir.path();
        let address = fixture.server.address;
        let authority = &fixture.authority;
        let served_certificate = |stream: &tokio_rustls::client::TlsStream<TcpStream>| {
            stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|certificate| certificate.as_ref().to_vec())
                .expect("server sent a certificate")
        };
        let pem_der = |pem: &str| {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .expect("PEM")
                .as_ref()
                .to_vec()
        };

        let first = tls_connect(address, client_tls_config(Some(authority), None, &[]))
            .await
            .expect("first handshake");
        let rotated = authority.server_certificate("server two");
        write_server_material(dir, &rotated);
        let second = tls_connect(address, client_tls_config(Some(authority), None, &[]))
            .await
            .expect("handshake after rotation");
        assert_ne!(served_certificate(&first), served_certificate(&second));
        assert_eq!(
            served_certificate(&second),
            pem_der(&rotated.certificate_pem)
        );

        let config_path = dir.join("web-config.yml");
        let good_config = std::fs::read_to_string(&config_path).expect("read config");
        write_web_config(
            dir,
            "tls_server_config:\n  cert_file: server.crt\n  wrong_key: x\n",
        );
        assert!(
            tls_connect(address, client_tls_config(Some(authority), None, &[]))
                .await
                .is_err()
        );
        write_web_config(dir, &good_config);
        tls_connect(address, client_tls_config(Some(authority), None, &[]))
            .await
            .expect("handshakes work again once the file is fixed");
        fixture.server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn plain_http2_with_prior_knowledge_follows_the_http2_setting() {
        let prior_knowledge_client = || {
            reqwest::Client::builder()
                .tls_backend_preconfigured(client_tls_config(None, None, &[]))
                .http2_prior_knowledge()
                .build()
                .expect("client builds")
        };
        let server = TestServer::start(None, ServeOptions::default()).await;
        let response = prior_knowledge_client()
            .get(server.http_url("/hello"))
            .send()
            .await
            .expect("h2c GET");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.text().await.expect("body"), "hello");
        server.stop().await.expect("clean stop");

        let dir = tempfile::tempdir().expect("temp dir");
        let path = write_web_config(dir.path(), "http_server_config:\n  http2: false\n");
        let server =
            TestServer::start(Some(quick_reload_handle(&path)), ServeOptions::default()).await;
        assert!(prior_knowledge_client()
            .get(server.http_url("/hello"))
            .send()
            .await
            .is_err());
        let http1 = plain_client()
            .get(server.http_url("/hello"))
            .send()
            .await
            .expect("HTTP/1.1 GET");
        assert_eq!(http1.version(), reqwest::Version::HTTP_11);
        server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn graceful_shutdown_lets_in_flight_requests_finish() {
        let server = TestServer::start(None, ServeOptions::default()).await;
        let client = plain_client();
        let url = server.http_url("/slow");
        let in_flight = tokio::spawn(async move { client.get(url).send().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let address = server.address;
        server.stop().await.expect("clean stop");
        let response = in_flight
            .await
            .expect("client task completes")
            .expect("in-flight request is answered");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "slow done");
        assert!(
            TcpStream::connect(address).await.is_err(),
            "listener is closed"
        );
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_past_the_grace_period() {
        let options = ServeOptions {
            shutdown_grace_period: Duration::from_millis(200),
            ..ServeOptions::default()
        };
        let server = TestServer::start(None, options).await;
        let client = plain_client();
        let url = server.http_url("/hang");
        let in_flight = tokio::spawn(async move { client.get(url).send().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        server.stop().await.expect("clean stop");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let outcome = in_flight.await.expect("client task completes");
        assert!(outcome.is_err(), "the hanging request is cut off");
    }

    #[tokio::test]
    async fn slow_requests_past_the_limit_get_a_503() {
        let options = ServeOptions {
            request_time_limit: Duration::from_millis(100),
            ..ServeOptions::default()
        };
        let server = TestServer::start(None, options).await;
        let response = plain_client()
            .get(server.http_url("/slow"))
            .send()
            .await
            .expect("GET /slow");
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.text().await.expect("body"),
            "Service Unavailable\n"
        );
        server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn silent_connections_are_closed() {
        use tokio::io::AsyncReadExt as _;
        let options = ServeOptions {
            first_request_timeout: Duration::from_millis(200),
            ..ServeOptions::default()
        };
        let server = TestServer::start(None, options).await;
        let mut silent = TcpStream::connect(server.address).await.expect("connect");
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer))
            .await
            .expect("server closes the silent connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        server.stop().await.expect("clean stop");
    }

    #[tokio::test]
    async fn kept_alive_connections_stay_open_while_idle_for_seconds() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let server = TestServer::start(None, ServeOptions::default()).await;
        let mut connection = TcpStream::connect(server.address).await.expect("connect");
        let request = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";
        let mut buffer = vec![0u8; 4096];
        for pause in [Duration::ZERO, Duration::from_secs(3)] {
            tokio::time::sleep(pause).await;
            connection.write_all(request).await.expect("send a request");
            let read = tokio::time::timeout(Duration::from_secs(5), connection.read(&mut buffer))
                .await
                .expect("an answer in time")
                .expect("read the answer");
            assert!(
                buffer[..read].starts_with(b"HTTP/1.1 "),
                "after {pause:?} idle: {:?}",
                String::from_utf8_lossy(&buffer[..read])
            );
        }
        server.stop().await.expect("clean stop");
    }

    #[test]
    fn listen_addresses_are_split_like_go() {
        assert_eq!(split_host_port(":9020").expect("valid"), ("", 9020));
        assert_eq!(
            split_host_port("127.0.0.1:0").expect("valid"),
            ("127.0.0.1", 0)
        );
        assert_eq!(split_host_port("[::1]:9020").expect("valid"), ("::1", 9020));
        assert_eq!(
            split_host_port("localhost:9020").expect("valid"),
            ("localhost", 9020)
        );
        for invalid in [
            "9020",
            "localhost",
            "::1:9020",
            "[::1]",
            "[::1:9020",
            "host:http",
            "host:70000",
        ] {
            let error = split_host_port(invalid).expect_err(invalid);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{invalid}");
        }
    }

    #[tokio::test]
    async fn bind_accepts_go_addresses_and_reports_a_port_in_use() {
        let listeners = bind(&[
            ":0".to_owned(),
            "127.0.0.1:0".to_owned(),
            "localhost:0".to_owned(),
        ])
        .await
        .expect("bind");
        let all_interfaces = listeners[0].local_addr().expect("address");
        assert!(all_interfaces.ip().is_unspecified(), "{all_interfaces}");
        assert!(listeners[2]
            .local_addr()
            .expect("address")
            .ip()
            .is_loopback());
        // The all-interfaces listener accepts IPv4 loopback connections.
        TcpStream::connect(("127.0.0.1", all_interfaces.port()))
            .await
            .expect("IPv4 reaches the all-interfaces listener");

        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let v6 = bind(&["[::1]:0".to_owned()])
                .await
                .expect("bind IPv6 loopback");
            assert_eq!(
                v6[0].local_addr().expect("address").ip(),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            );
        }

        let taken = listeners[1].local_addr().expect("address");
        let error = bind(&[taken.to_string()])
            .await
            .expect_err("port is in use");
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains(&taken.to_string()), "{error}");

        let error = bind(&["nonsense".to_owned()]).await.expect_err("no port");
        assert!(error.to_string().contains("missing port"), "{error}");
    }
}
