//! The real binary: flags, config errors, serving on the default-like config, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ceems_api_server");

fn run(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .env_remove("CEEMS_API_SERVER_CONFIG_FILE")
        .env_remove("CEEMS_API_SERVER_WEB_CONFIG_FILE")
        .output()
        .expect("binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_and_help_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run(&["--version"], dir.path());
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    let (code, stdout, _) = run(&["-h"], dir.path());
    assert_eq!(code, 0);
    assert!(stdout.contains("--web.listen-address"), "{stdout}");
}

#[test]
fn bad_flags_and_config_fail_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["--no-such-flag"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");

    let (code, _, stderr) = run(&["--query.max-period=forever"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("query.max-period"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.yml"),
        "ceems_api_server:\n  data:\n    update_interval: 0s\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["--config.file=bad.yml"], dir.path());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("ceems_api_server.data.update_interval"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused config creates nothing"
    );

    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  grafana: not-a-hash\n").unwrap();
    let (code, _, stderr) = run(
        &[
            "--web.config.file=web.yml",
            "--web.listen-address=127.0.0.1:0",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("web.yml"), "{stderr}");
}

#[test]
fn serves_the_repository_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yml");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = Command::new(BINARY)
        .args([
            &format!("--config.file={config}"),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");

    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                use std::io::{Read, Write};
                stream
                    .write_all(
                        b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                    )
                    .unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                break answer;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("server did not listen: {error}"),
        }
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("CEEMS API Server is healthy"), "{health}");
    assert!(
        dir.path().join("data/ceems.db").exists(),
        "database under ./data"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
}
