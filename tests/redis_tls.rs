//! `rediss://`: rung reaches Redis over TLS (rustls) and checks the server's
//! certificate against the system's roots, here pointed at a certificate
//! made for the test with `SSL_CERT_FILE`.

mod common;

use std::process::Command;

use common::redis::{unique_prefix, RedisServer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for `localhost` and its key, as PEM files.
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn count_over(url: &str, prefix: &str, trusted: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rung"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["segment", "count", "cart_abandoners", "--store-url", url])
        .env("RUNG_STORE__KEY_PREFIX", prefix)
        .env("SSL_CERT_FILE", trusted)
        .env_remove("SSL_CERT_DIR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn a_tls_redis_is_used_when_its_certificate_is_trusted_and_refused_when_not() {
    // Arrange: Redis with a TLS port, its certificate made now.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "redis");
    let (stranger, _) = certificate(dir.path(), "stranger");
    let tls_port = free_port().to_string();
    let _redis = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}/");
    let prefix = unique_prefix();

    // Act
    let trusted = count_over(&url, &prefix, &cert);
    let untrusted = count_over(&url, &prefix, &stranger);

    // Assert: an empty store has no cart abandoners, over TLS.
    let stderr = String::from_utf8_lossy(&trusted.stderr);
    assert!(trusted.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&trusted.stdout).trim(), "0");
    // A certificate nobody vouches for is refused, naming the URL.
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "should be refused");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
