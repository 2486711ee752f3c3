//! The start-up check: a TCP connection to the Grafana URL's host and port.

use std::io::ErrorKind;

use ceems_api_server::config::ClientUrl;
use ceems_api_server::grafana::{check_reachable, GrafanaError};

use crate::fake_grafana::FakeGrafana;

fn url(text: &str) -> ClientUrl {
    ClientUrl::parse(text).unwrap()
}

#[tokio::test]
async fn a_listening_grafana_is_reachable_and_a_closed_port_is_not() {
    let grafana = FakeGrafana::start().await;
    check_reachable(&url(&grafana.url())).await.unwrap();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = check_reachable(&url(&format!("http://127.0.0.1:{port}/grafana")))
        .await
        .unwrap_err();
    match &error {
        GrafanaError::Unreachable { address, source } => {
            assert_eq!(address, &format!("127.0.0.1:{port}"));
            assert_eq!(source.kind(), ErrorKind::ConnectionRefused);
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with(&format!("Grafana at 127.0.0.1:{port} is not reachable: ")),
        "{error}"
    );
}

/// A URL without a port dials the scheme's default (80 for http). Which outcome is right
/// depends on who holds port 80 here, so the test first finds out by binding it.
#[tokio::test]
async fn a_url_without_a_port_dials_the_scheme_default() {
    let no_port = url("http://127.0.0.1/grafana/");
    match std::net::TcpListener::bind("127.0.0.1:80") {
        Ok(listener) => {
            check_reachable(&no_port)
                .await
                .expect("our listener on port 80 accepts");
            drop(listener);
            assert_unreachable_on_port_80(check_reachable(&no_port).await);
        }
        // Someone else listens on 80: the dial must reach them.
        Err(error) if error.kind() == ErrorKind::AddrInUse => {
            check_reachable(&no_port)
                .await
                .expect("the listener on port 80 accepts");
        }
        // Not allowed to bind 80, so nothing of ours listens there.
        Err(_) => assert_unreachable_on_port_80(check_reachable(&no_port).await),
    }
}

fn assert_unreachable_on_port_80(result: Result<(), GrafanaError>) {
    match result {
        Err(GrafanaError::Unreachable { address, .. }) => assert_eq!(address, "127.0.0.1:80"),
        other => panic!("expected Unreachable on 127.0.0.1:80, got {other:?}"),
    }
}
