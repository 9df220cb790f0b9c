//! NATS over TLS with a user and password (`--nats-ca`, `--nats-user`,
//! `--nats-password` or $DMON_NATS_PASSWORD): a real nats-server whose
//! configuration requires both, a gateway and a worker that reach it, and
//! the clear refusals of a wrong password, a plain-text client and a
//! missing file; and a token, a client certificate.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::nats::Nats;
use common::tls::Pki;
use common::*;
use serde_json::json;

const PASSWORD: &str = "s3cret-pw";

/// Prints what the worker processes.
const MODULE: &str = "from dmon.streams import *\n\nstream = printer(\"got: \")\n";

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A nats-server requiring TLS and the user `dmon` with [`PASSWORD`]; its
/// URL, and the CA file that signed its certificate.
struct Secured {
    _pki: Pki,
    _nats: Nats,
    url: String,
    ca: String,
}

fn secured_nats() -> Secured {
    let pki = Pki::new("nats");
    let server = pki.server("nats");
    let nats = Nats::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n\
         authorization {{\n  user: dmon\n  password: {PASSWORD:?}\n}}\n",
        path(&server.cert),
        path(&server.key),
    ));
    Secured {
        url: nats.url(),
        ca: path(&pki.ca),
        _pki: pki,
        _nats: nats,
    }
}

/// The flags of a TLS connection as `dmon` with `password`.
fn login<'a>(ca: &'a str, password: &'a str) -> [&'a str; 6] {
    [
        "--nats-ca",
        ca,
        "--nats-user",
        "dmon",
        "--nats-password",
        password,
    ]
}

/// `dmon serve` with `flags`, expected to stop at start-up: its stderr.
fn refused(flags: &[&str]) -> String {
    let mut s = Server::spawn(MODULE, "py", flags);
    let status = s.wait_exit(TIMEOUT).expect("dmon serve exits");
    assert!(!status.success());
    s.stderr.read_to_eof(TIMEOUT).join("\n")
}

#[test]
fn a_gateway_and_a_worker_meet_through_nats_over_tls_with_a_password() {
    let nats = secured_nats();
    let (url, ca) = (nats.url.clone(), nats.ca.clone());

    // The worker has the password on its command line...
    let mut worker_flags = vec!["--consume", &url, "--partitions", "0-3"];
    worker_flags.extend(["--partition-count", "4", "--node-name", "w"]);
    worker_flags.extend(login(&ca, PASSWORD));
    let mut worker = Server::start_with(MODULE, "py", &worker_flags);
    worker.expect_stderr("the worker owns its partitions", |l| {
        l.contains("took over partitions 0-3")
    });

    // ... the gateway in its environment.
    let dir = TempDir::new();
    let module = dir.write("gateway.py", MODULE);
    let mut cmd = Command::new(dmon_bin());
    cmd.env("DMON_INSTRUMENT_INTERVAL", "0")
        .env("DMON_NATS_PASSWORD", PASSWORD)
        .arg("serve")
        .arg("--streams")
        .arg(&module)
        .args(["--udp", "127.0.0.1:0", "--riemann-udp", "off"])
        .args(["--riemann-tcp", "off", "--publish", &url])
        .args(["--partition-count", "4", "--node-name", "gw"])
        // All but --nats-password: it comes from the environment.
        .args(&login(&ca, PASSWORD)[..4]);
    let mut gateway = Spawned::start(cmd);
    Udp::to(gateway.port).send_json(&json!({"host": "web1", "service": "over tls"}));
    let got = parse_printed(
        &worker.expect_stdout("the event", |l| l.starts_with("got: ")),
        "got: ",
    );
    assert_eq!(got["service"], "over tls");

    // `dmon query --cluster` through the same NATS finds both nodes.
    let mut query = vec!["query", "--cluster", &url];
    query.extend(login(&ca, PASSWORD));
    query.push("true");
    let q = run_dmon(&query, None);
    assert!(q.status.success(), "{}", q.stderr);
    for node in ["w: answered", "gw: answered"] {
        assert!(q.stderr.contains(node), "{}", q.stderr);
    }
    // The user and password may be the URL's too.
    let in_url = url.replace("nats://", &format!("nats://dmon:{PASSWORD}@"));
    let q = run_dmon(
        &["query", "--cluster", &in_url, "--nats-ca", &ca, "true"],
        None,
    );
    assert!(q.status.success(), "{}", q.stderr);
    assert!(q.stderr.contains("w: answered"), "{}", q.stderr);

    let done = worker.terminate();
    let _ = gateway.child.0.kill();
    let gateway_log = gateway.stderr.read_to_eof(TIMEOUT);
    for line in done.stderr.iter().chain(&gateway_log) {
        assert!(!line.contains(PASSWORD), "the password was logged: {line}");
    }
}

#[test]
fn a_wrong_password_plain_text_and_missing_files_are_refused_clearly() {
    let nats = secured_nats();
    let (url, ca) = (nats.url.clone(), nats.ca.clone());

    let mut publish = vec!["--publish", &url];
    publish.extend(login(&ca, "wrong-pw"));
    let wrong = refused(&publish);
    assert!(wrong.contains("authorization violation"), "{wrong}");
    assert!(wrong.contains("--nats-password"), "{wrong}");
    assert!(!wrong.contains("wrong-pw"), "{wrong}");

    // Without --nats-ca, dmon does not trust the server's certificate.
    let plain = refused(&[
        "--consume",
        &url,
        "--partitions",
        "0",
        "--nats-user",
        "dmon",
        "--nats-password",
        PASSWORD,
    ]);
    assert!(plain.contains("pass its CA with --nats-ca"), "{plain}");

    let missing = refused(&["--cluster", &url, "--nats-ca", "/nonexistent/ca.pem"]);
    assert!(
        missing.contains("--nats-ca /nonexistent/ca.pem: No such file"),
        "{missing}"
    );
    let creds = refused(&["--cluster", &url, "--nats-creds", "/nonexistent/dmon.creds"]);
    assert!(
        creds.contains("--nats-creds /nonexistent/dmon.creds: No such file"),
        "{creds}"
    );
    let dir = TempDir::new();
    let garbage = path(&dir.write("dmon.creds", "not a creds file\n"));
    let creds = refused(&["--cluster", &url, "--nats-creds", &garbage]);
    assert!(
        creds.contains(&format!("--nats-creds {garbage}: ")),
        "{creds}"
    );
}

/// A NATS that verifies clients (`tls { verify: true }`): a node with
/// `--nats-cert`/`--nats-key` joins; one without is refused.
#[test]
fn a_client_certificate_is_presented_to_a_nats_that_verifies_clients() {
    let pki = Pki::new("nats");
    let server = pki.server("nats");
    let client = pki.client("dmon-node");
    let nats = Nats::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        path(&server.cert),
        path(&server.key),
        path(&pki.ca),
    ));
    let url = nats.url();
    let ca = path(&pki.ca);
    let (cert, key) = (path(&client.cert), path(&client.key));

    let mut node = Server::start_with(
        MODULE,
        "py",
        &[
            "--cluster",
            &url,
            "--nats-ca",
            &ca,
            "--nats-cert",
            &cert,
            "--nats-key",
            &key,
        ],
    );
    node.expect_stderr("the node joined", |l| {
        l.contains("cluster: answering queries")
    });
    let without = refused(&["--cluster", &url, "--nats-ca", &ca]);
    assert!(
        without.contains("check --nats-cert and --nats-key"),
        "{without}"
    );
    assert!(node.terminate().status.success());
}

/// A NATS that wants a token: `--nats-token`, or the URL's
/// `nats://TOKEN@host`, joins; a wrong token is refused.
#[test]
fn a_token_is_sent_from_the_flag_or_the_url() {
    let nats = Nats::start_with_config("authorization {\n  token: \"t0ken-secret\"\n}\n");
    let url = nats.url();
    let mut node = Server::start_with(
        MODULE,
        "py",
        &["--cluster", &url, "--nats-token", "t0ken-secret"],
    );
    node.expect_stderr("the node joined", |l| {
        l.contains("cluster: answering queries")
    });
    let in_url = url.replace("nats://", "nats://t0ken-secret@");
    let q = run_dmon(&["query", "--cluster", &in_url, "true"], None);
    assert!(q.status.success(), "{}", q.stderr);
    assert!(q.stderr.contains(": answered"), "{}", q.stderr);
    let wrong = refused(&["--cluster", &url, "--nats-token", "not-it"]);
    assert!(wrong.contains("authorization violation"), "{wrong}");
    let done = node.terminate();
    assert!(
        !done.stderr.iter().any(|l| l.contains("t0ken-secret")),
        "{:?}",
        done.stderr
    );
}
