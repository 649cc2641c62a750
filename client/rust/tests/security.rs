//! TLS, mutual TLS and bearer tokens through `connect_with`, against real `wfe-sqlite serve`
//! processes. Certificates are made per test with the `openssl` command (OpenSSL 3): a CA, a
//! server certificate for `localhost` / `127.0.0.1`, a client certificate, and a second CA that
//! signed nothing the server trusts.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::ServerProcess;
use serde_json::json;
use tempfile::TempDir;
use wfe_core::WfeError;
use wfe_core::models::{LifecycleEvent, LifecycleEventType, WorkflowInstance};
use wfe_core::traits::{LifecyclePublisher, PersistenceProvider, WorkflowRepository};
use wfe_grpc::{
    ConnectOptions, ErrorReason, GrpcLifecyclePublisher, GrpcPersistenceProvider, error_reason,
    reason_of,
};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl (is it installed?)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.crt`, `server.crt/key` (signed by ca, for localhost and 127.0.0.1), `client.crt/key`
/// (signed by ca), `other-ca.crt` and `other-client.crt/key` (signed by other-ca).
struct Certs {
    dir: TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN={ca}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt]);
            openssl(d, &args);
        }
        let leaf = |name: &str, ca: &str, ext: Option<&str>| {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let subj = format!("/CN={name}");
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
            if let Some(ext) = ext {
                args.extend(["-addext", ext]);
            }
            openssl(d, &args);
            let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
            let mut args = vec![
                "x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key,
            ];
            args.extend(["-days", "2", "-out", &crt]);
            if ext.is_some() {
                args.extend(["-copy_extensions", "copy"]);
            }
            openssl(d, &args);
        };
        leaf(
            "server",
            "ca",
            Some("subjectAltName=DNS:localhost,IP:127.0.0.1"),
        );
        // An extension makes them X.509 v3: rustls refuses a v1 client certificate, which is
        // what `openssl x509 -req` makes of a request without extensions.
        leaf("client", "ca", Some("extendedKeyUsage=clientAuth"));
        leaf(
            "other-client",
            "other-ca",
            Some("extendedKeyUsage=clientAuth"),
        );
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// Server arguments for TLS, plus `--tls-client-ca ca.crt` when `mutual`.
    fn server_args(&self, mutual: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            self.path("server.crt"),
            "--tls-key".to_string(),
            self.path("server.key"),
        ];
        if mutual {
            args.extend(["--tls-client-ca".to_string(), self.path("ca.crt")]);
        }
        args
    }
}

async fn start(args: Vec<String>, env: Vec<(&'static str, String)>) -> ServerProcess {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServerProcess::start_with(&args, &env)
    })
    .await
    .unwrap()
}

/// A write and a read back: the connection works end to end.
async fn round_trip(p: &GrpcPersistenceProvider) -> Result<(), WfeError> {
    p.ensure_store_exists().await?;
    let w = WorkflowInstance::new("secure", 1, json!({"k": "v"}));
    let id = p.create_new_workflow(&w).await?;
    let back = p.get_workflow_instance(&id).await?;
    assert_eq!(back.data, json!({"k": "v"}));
    Ok(())
}

/// Connects and makes one call; the error of whichever step failed. (A server that refuses a
/// client certificate may say so only after a TLS 1.3 handshake the client saw succeed.)
async fn connect_and_call(addr: &str, options: ConnectOptions) -> Result<(), WfeError> {
    let p = GrpcPersistenceProvider::connect_with(addr, options).await?;
    round_trip(&p).await
}

fn tls_to(certs: &Certs) -> ConnectOptions {
    ConnectOptions {
        tls_ca_pem: Some(certs.pem("ca.crt")),
        ..Default::default()
    }
}

#[tokio::test]
async fn tls_with_the_servers_ca_works() {
    let certs = Certs::new();
    let server = start(certs.server_args(false), vec![]).await;
    // By IP (the certificate names 127.0.0.1) ...
    let p = GrpcPersistenceProvider::connect_with(&server.addr, tls_to(&certs))
        .await
        .unwrap();
    round_trip(&p).await.unwrap();
    // ... by name, and by IP with the name to check given as `domain`.
    let port = server.addr.rsplit_once(':').unwrap().1;
    connect_and_call(&format!("localhost:{port}"), tls_to(&certs))
        .await
        .unwrap();
    connect_and_call(
        &format!("https://{}", server.addr),
        ConnectOptions {
            domain: Some("localhost".into()),
            ..tls_to(&certs)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_ca_pem_without_a_certificate_is_invalid_argument() {
    // The wrong file given as the CA (the server's key, a DER file, text): it used to be taken
    // as "no CA" and the handshake failed with "invalid peer certificate: UnknownIssuer", which
    // blames the server's certificate.
    let certs = Certs::new();
    let server = start(certs.server_args(false), vec![]).await;
    for wrong in [certs.pem("server.key"), b"not a certificate".to_vec()] {
        let err = GrpcPersistenceProvider::connect_with(
            &server.addr,
            ConnectOptions {
                tls_ca_pem: Some(wrong),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
        assert!(err.to_string().contains("tls_ca_pem"), "{err}");
    }
    // A client certificate PEM without a certificate (mutual TLS) is refused the same way.
    let err = GrpcPersistenceProvider::connect_with(
        &server.addr,
        ConnectOptions {
            tls_cert_pem: Some(certs.pem("client.key")),
            tls_key_pem: Some(certs.pem("client.key")),
            ..tls_to(&certs)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
    assert!(err.to_string().contains("tls_cert_pem"), "{err}");
}

#[tokio::test]
async fn tls_with_another_ca_is_refused() {
    let certs = Certs::new();
    let server = start(certs.server_args(false), vec![]).await;
    let err = GrpcPersistenceProvider::connect_with(
        &server.addr,
        ConnectOptions {
            tls_ca_pem: Some(certs.pem("other-ca.crt")),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    eprintln!("refused as expected: {err}");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn tls_with_a_name_the_certificate_lacks_is_refused() {
    let certs = Certs::new();
    let server = start(certs.server_args(false), vec![]).await;
    let err = connect_and_call(
        &server.addr,
        ConnectOptions {
            domain: Some("elsewhere.example".into()),
            ..tls_to(&certs)
        },
    )
    .await
    .unwrap_err();
    eprintln!("refused as expected: {err}");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
}

#[tokio::test]
async fn plaintext_client_cannot_talk_to_a_tls_server() {
    let certs = Certs::new();
    let server = start(certs.server_args(false), vec![]).await;
    let err = connect_and_call(&server.addr, ConnectOptions::default())
        .await
        .unwrap_err();
    eprintln!("refused as expected: {err}");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_works() {
    let certs = Certs::new();
    let server = start(certs.server_args(true), vec![]).await;
    connect_and_call(
        &server.addr,
        ConnectOptions {
            tls_cert_pem: Some(certs.pem("client.crt")),
            tls_key_pem: Some(certs.pem("client.key")),
            ..tls_to(&certs)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_is_refused() {
    let certs = Certs::new();
    let server = start(certs.server_args(true), vec![]).await;
    let err = connect_and_call(&server.addr, tls_to(&certs))
        .await
        .unwrap_err();
    eprintln!("refused as expected: {err}");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
}

#[tokio::test]
async fn mutual_tls_with_a_certificate_of_another_ca_is_refused() {
    let certs = Certs::new();
    let server = start(certs.server_args(true), vec![]).await;
    let err = connect_and_call(
        &server.addr,
        ConnectOptions {
            tls_cert_pem: Some(certs.pem("other-client.crt")),
            tls_key_pem: Some(certs.pem("other-client.key")),
            ..tls_to(&certs)
        },
    )
    .await
    .unwrap_err();
    eprintln!("refused as expected: {err}");
    assert_eq!(reason_of(&err), Some("UNAVAILABLE"), "{err}");
}

fn with_token(token: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(token.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_valid_token_works_and_every_configured_token_is_valid() {
    let server = start(
        vec![],
        vec![("WFE_SQLITE_TOKENS", "tok-one,tok-two".into())],
    )
    .await;
    for token in ["tok-one", "tok-two"] {
        connect_and_call(&server.addr, with_token(token))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_missing_token_is_unauthenticated() {
    let server = start(vec![], vec![("WFE_SQLITE_TOKENS", "tok-one".into())]).await;
    // The connection itself is fine; every call is refused.
    let p = GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap();
    let err = p.ensure_store_exists().await.unwrap_err();
    assert!(matches!(err, WfeError::Persistence(_)), "{err:?}");
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
    let err = p.get_workflow_instance("w1").await.unwrap_err();
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_unauthenticated() {
    let server = start(vec![], vec![("WFE_SQLITE_TOKENS", "tok-one".into())]).await;
    let err = connect_and_call(&server.addr, with_token("tok-one-not"))
        .await
        .unwrap_err();
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
}

#[tokio::test]
async fn a_lifecycle_watch_without_a_valid_token_says_unauthenticated() {
    // subscribe_connected used to wait its whole timeout and then blame the network
    // (UNAVAILABLE "did not open"), while the watch task was refused UNAUTHENTICATED every time.
    let server = start(vec![], vec![("WFE_SQLITE_TOKENS", "tok-one".into())]).await;
    let lifecycle = GrpcLifecyclePublisher::connect_with(&server.addr, with_token("tok-wrong"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = lifecycle
        .subscribe_connected(Duration::from_secs(10))
        .await
        .expect_err("a watch without a valid token does not open");
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
    assert!(err.to_string().contains("watch stream"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // Publishing says so at flush.
    let event = LifecycleEvent::new("w1", "def", 1, LifecycleEventType::Started);
    lifecycle.publish(event).await.unwrap();
    let err = lifecycle.flush().await.unwrap_err();
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
    // With the token, both work.
    let lifecycle = GrpcLifecyclePublisher::connect_with(&server.addr, with_token("tok-one"))
        .await
        .unwrap();
    let mut events = lifecycle
        .subscribe_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let event = LifecycleEvent::new("w2", "def", 1, LifecycleEventType::Started);
    lifecycle.publish(event).await.unwrap();
    lifecycle.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("event not relayed")
        .unwrap();
    assert_eq!(got.workflow_instance_id, "w2");
}

#[tokio::test]
async fn token_from_a_file_over_mutual_tls() {
    // The deployment the README describes: TLS, client certificates and tokens together.
    let certs = Certs::new();
    std::fs::write(certs.dir.path().join("tokens"), "# workers\nfile-token\n").unwrap();
    let mut args = certs.server_args(true);
    args.extend(["--tokens-file".to_string(), certs.path("tokens")]);
    let server = start(args, vec![]).await;
    let mtls = ConnectOptions {
        tls_cert_pem: Some(certs.pem("client.crt")),
        tls_key_pem: Some(certs.pem("client.key")),
        ..tls_to(&certs)
    };
    connect_and_call(
        &server.addr,
        ConnectOptions {
            token: Some("file-token".into()),
            ..mtls.clone()
        },
    )
    .await
    .unwrap();
    let err = connect_and_call(&server.addr, mtls).await.unwrap_err();
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
}

#[tokio::test]
async fn bad_options_are_invalid_argument() {
    // Checked before anything is sent: no server needed.
    let cert_without_key = ConnectOptions {
        tls_cert_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        ..Default::default()
    };
    let token_with_newline = with_token("abc\ndef");
    let http_with_tls = ConnectOptions {
        domain: Some("localhost".into()),
        ..Default::default()
    };
    for (addr, options) in [
        ("127.0.0.1:1", cert_without_key),
        ("127.0.0.1:1", token_with_newline),
        ("http://127.0.0.1:1", http_with_tls),
    ] {
        let err = GrpcPersistenceProvider::connect_with(addr, options)
            .await
            .unwrap_err();
        assert_eq!(reason_of(&err), Some("INVALID_ARGUMENT"), "{err}");
    }
}

#[test]
fn debug_output_hides_the_token_and_the_key() {
    let options = ConnectOptions {
        token: Some("s3cret-token".into()),
        tls_key_pem: Some(b"PRIVATE KEY BYTES".to_vec()),
        ..Default::default()
    };
    let text = format!("{options:?}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("PRIVATE"), "{text}");
}

#[tokio::test]
async fn several_servers_with_mutual_tls_and_a_token() {
    // Two servers on one file, each with TLS, client certificates and tokens; the client given
    // both addresses (`localhost`, the name in the server certificate) spreads its calls.
    let certs = Certs::new();
    std::fs::write(certs.dir.path().join("tokens"), "several-token\n").unwrap();
    let mut args = certs.server_args(true);
    args.extend(["--tokens-file".to_string(), certs.path("tokens")]);
    let first = start(args.clone(), vec![]).await;
    let db = format!(
        "sqlite:///{}",
        first.db_path.display().to_string().trim_start_matches('/')
    );
    args.extend(["--db".to_string(), db]);
    let second = start(args, vec![]).await;
    let local = |s: &ServerProcess| format!("localhost:{}", s.addr.rsplit_once(':').unwrap().1);
    let both = [local(&first), local(&second)];
    let mtls = ConnectOptions {
        tls_cert_pem: Some(certs.pem("client.crt")),
        tls_key_pem: Some(certs.pem("client.key")),
        ..tls_to(&certs)
    };
    let store = GrpcPersistenceProvider::connect_many(
        &both,
        ConnectOptions {
            token: Some("several-token".into()),
            ..mtls.clone()
        },
    )
    .await
    .unwrap();
    for _ in 0..4 {
        round_trip(&store).await.unwrap();
    }
    let err = connect_and_call(&both.join(","), mtls).await.unwrap_err();
    assert_eq!(
        error_reason(&err),
        Some(ErrorReason::Unauthenticated),
        "{err}"
    );
    // Plaintext against both: the error names the first server.
    let err = connect_and_call(&both.join(","), ConnectOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("UNAVAILABLE"), "{err}");
}
