//! A loopback HTTP server with canned answers, for tests of the updater's HTTP behaviour
//! that a real Prometheus cannot show (refused POST, missing status endpoints).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// The query string for GET, the form body for POST.
    pub parameters: String,
}

/// Picks (status, JSON body) for a request.
pub type Answer = fn(&SeenRequest) -> (u16, String);

pub struct FakeServer {
    pub address: SocketAddr,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl FakeServer {
    pub async fn start(answer: Answer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let recorded = recorded.clone();
                        async move {
                            let request: hyper::Request<hyper::body::Incoming> = request;
                            let method = request.method().to_string();
                            let path = request.uri().path().to_owned();
                            let query = request.uri().query().unwrap_or_default().to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let seen = SeenRequest {
                                parameters: if method == "GET" {
                                    query
                                } else {
                                    String::from_utf8_lossy(&body).into_owned()
                                },
                                method,
                                path,
                            };
                            let (status, body) = answer(&seen);
                            recorded.lock().unwrap().push(seen);
                            let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            response.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { address, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}
