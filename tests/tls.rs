//! TLS and client authentication on the listeners, with certificates the
//! tests make (tests/common/tls.rs) and real clients: the PyPI
//! `riemann-client` (tests/support/riemann_tls_client.py), Debian's
//! riemann-c-client, `openssl s_client`, curl, the Python `websockets`
//! client, `dmon send --riemann`, `dmon query` and the shell's `--connect`
//! in tmux.

use crate::common;
use crate::shell_support;

use std::io::Write;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};

use common::tls::{CertFiles, Pki};
use common::*;
use serde_json::{json, Value};

/// Prints every event and indexes it (so queries find it).
const MODULE: &str = r#"
from dmon.streams import *

stream = printer("got: ")
index_stream = index()
"#;

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `dmon serve` with TLS from `server` on Riemann TCP and HTTP, and `extra`.
fn start(server: &CertFiles, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert".to_owned(),
        path(&server.cert),
        "--tls-key".to_owned(),
        path(&server.key),
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(MODULE, "py", &args)
}

/// tests/support/riemann_tls_client.py: one TLS connection through the
/// PyPI riemann-client, driven line by line.
struct PyClient {
    _child: KillOnDrop,
    stdin: ChildStdin,
    out: Lines,
}

impl PyClient {
    /// Connects; the first line says whether the handshake succeeded.
    fn connect(port: u16, ca: &Path, identity: Option<&CertFiles>) -> (PyClient, String) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/riemann_tls_client.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string()).arg(ca);
        if let Some(id) = identity {
            cmd.arg(&id.cert).arg(&id.key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 (the test venv on PATH; ./test.sh sets it up)");
        let stdin = child.stdin.take().unwrap();
        let mut out = Lines::spawn("riemann tls client", child.stdout.take().unwrap());
        let first = out
            .wait_for(TIMEOUT, |_| true)
            .unwrap_or_else(|why| panic!("the Python client said nothing: {why}"));
        (
            PyClient {
                _child: KillOnDrop(child),
                stdin,
                out,
            },
            first,
        )
    }

    fn connected(port: u16, ca: &Path, identity: Option<&CertFiles>) -> PyClient {
        let (client, first) = PyClient::connect(port, ca, identity);
        assert_eq!(first, "connected");
        client
    }

    /// Sends one command and returns its answer line.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to the client");
        self.stdin.flush().unwrap();
        self.out
            .wait_for(TIMEOUT, |_| true)
            .unwrap_or_else(|why| panic!("no answer to {command:?}: {why}"))
    }

    fn query(&mut self, q: &str) -> Value {
        let answer = self.ask(&format!("query {q}"));
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("query {q}: {answer}"))
    }
}

/// `dmon query` over TLS: (exit success, stdout, stderr).
fn dmon_query(port: u16, q: &str, tls: &[&str]) -> Run {
    let port = format!("127.0.0.1:{port}");
    let mut args = vec!["query", "--riemann-tcp", &port];
    args.extend(tls);
    args.push(q);
    run_dmon(&args, None)
}

fn curl(url: &str, extra: &[&str]) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url);
    let out = run_bounded(cmd, None);
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    (
        status.trim().parse().unwrap_or(0),
        body.to_owned(),
        out.stderr,
    )
}

#[test]
fn real_riemann_clients_send_and_query_over_tls() {
    let pki = Pki::new("main");
    let server_cert = pki.server("server");
    let client_cert = pki.client("client");
    let mut s = start(&server_cert, &[]);
    let ca = path(&pki.ca);

    // The handshake as OpenSSL sees it: TLS 1.3, the chain verified.
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-brief", "-verify_return_error", "-CAfile", &ca])
        .args(["-connect", &format!("127.0.0.1:{}", s.riemann_tcp)]);
    let out = run_bounded(cmd, Some(""));
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("Verification: OK"), "{said}");
    assert!(said.contains("Protocol version: TLSv1.3"), "{said}");

    // The PyPI riemann-client.
    let mut py = PyClient::connected(s.riemann_tcp, &pki.ca, None);
    assert_eq!(py.ask("send py1 cpu 0.5"), "sent");
    assert_eq!(s.expect_printed("got: ")["host"], "py1");

    // Debian's riemann-c-client, which always presents a certificate.
    let mut cmd = Command::new("/usr/bin/riemann-client");
    cmd.args(["send", "--tls", "-h", "c1", "-S", "disk", "-d", "0.9"])
        .args(["-o", &format!("cafile={ca}")])
        .args(["-o", &format!("certfile={}", path(&client_cert.cert))])
        .args(["-o", &format!("keyfile={}", path(&client_cert.key))])
        .args(["localhost", &s.riemann_tcp.to_string()]);
    let out = run_bounded(cmd, None);
    assert!(out.status.success(), "riemann-c-client: {out:?}");
    assert_eq!(s.expect_printed("got: ")["host"], "c1");

    // dmon's own client.
    let to = format!("127.0.0.1:{}", s.riemann_tcp);
    let sent = run_dmon(
        &[
            "send",
            "--riemann",
            "--riemann-tcp",
            &to,
            "--tls-ca",
            &ca,
            "host=d1",
            "service=net",
        ],
        None,
    );
    assert!(sent.status.success(), "{sent:?}");
    let found = dmon_query(s.riemann_tcp, "true", &["--json", "--tls-ca", &ca]);
    assert!(found.status.success(), "{found:?}");
    let hosts: Vec<String> = found
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["host"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(hosts, ["c1", "d1", "py1"]);
    // The Python client queries on the connection it sent on.
    assert_eq!(py.query("true"), json!(["c1/disk", "d1/net", "py1/cpu"]));

    let finished = s.terminate();
    assert!(
        !finished
            .stderr
            .iter()
            .any(|l| l.contains("UDP cannot be encrypted")),
        "loopback UDP needs no warning: {:?}",
        finished.stderr
    );
    assert_eq!(finished.stats().count("riemann_tls_failures"), 0);
}

#[test]
fn plain_text_and_untrusted_clients_are_refused_and_counted() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let mut s = start(&pki.server("server"), &[]);

    // Plain Riemann over TCP to the TLS port.
    let plain = dmon_query(s.riemann_tcp, "true", &[]);
    assert!(!plain.status.success());
    assert!(
        plain.stderr.contains("closed the connection"),
        "{}",
        plain.stderr
    );
    s.expect_stderr("the plain client's refusal", |l| {
        l.contains("the client does not speak TLS (a plain-text client on a TLS port?)")
    });
    // A client that trusts another CA gives up on dmon's certificate.
    let (_client, first) = PyClient::connect(s.riemann_tcp, &other.ca, None);
    assert!(first.contains("CERTIFICATE_VERIFY_FAILED"), "{first}");
    s.expect_stderr("the untrusting client's failure", |l| {
        l.contains("TLS handshake failed")
    });

    // Everyone else is still served.
    let mut py = PyClient::connected(s.riemann_tcp, &pki.ca, None);
    assert_eq!(py.ask("send ok1 cpu 1"), "sent");
    assert_eq!(py.query("host = \"ok1\""), json!(["ok1/cpu"]));
    assert_eq!(s.terminate().stats().count("riemann_tls_failures"), 2);
}

#[test]
fn client_certificates_are_required_with_tls_client_ca() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let client = pki.client("client");
    let stranger = other.client("stranger");
    let ca = path(&pki.ca);
    let mut s = start(&pki.server("server"), &["--tls-client-ca", &ca]);

    // No certificate: refused at the handshake.
    let bare = dmon_query(s.riemann_tcp, "true", &["--tls-ca", &ca]);
    assert!(!bare.status.success(), "{bare:?}");
    assert!(
        bare.stderr
            .contains("the server requires a client certificate (pass --tls-cert and --tls-key)"),
        "{}",
        bare.stderr
    );
    s.expect_stderr("the refusal of a client without a certificate", |l| {
        l.contains("the client presented no certificate, and --tls-client-ca requires one")
    });
    // A certificate from another CA: refused too.
    let (cert, key) = (path(&stranger.cert), path(&stranger.key));
    let foreign = dmon_query(
        s.riemann_tcp,
        "true",
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(!foreign.status.success(), "{foreign:?}");
    assert!(
        foreign
            .stderr
            .contains("the server refused this client's certificate"),
        "{}",
        foreign.stderr
    );
    s.expect_stderr("the refusal of a foreign certificate", |l| {
        l.contains("the client's certificate was refused")
    });

    // Signed by the CA: accepted, by each client.
    let mut py = PyClient::connected(s.riemann_tcp, &pki.ca, Some(&client));
    assert_eq!(py.ask("send m1 cpu 2"), "sent");
    let (cert, key) = (path(&client.cert), path(&client.key));
    let found = dmon_query(
        s.riemann_tcp,
        "true",
        &[
            "--json",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    assert!(found.status.success(), "{found:?}");
    assert!(found.stdout.contains(r#""host":"m1""#), "{}", found.stdout);

    // HTTPS asks for the certificate too.
    let url = format!("https://localhost:{}/index?query=true", s.http);
    let (status, _, err) = curl(&url, &["--cacert", &ca]);
    assert_eq!(status, 0, "no certificate, no answer: {err}");
    let (status, body, err) = curl(&url, &["--cacert", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(status, 200, "{err}");
    assert!(body.contains(r#""host":"m1""#), "{body}");

    let stats = s.terminate().stats();
    assert_eq!(stats.count("riemann_tls_failures"), 2);
    assert_eq!(stats.count("http_tls_failures"), 1);
}

/// Subscribes over WSS, trusting `ca`; prints "connected", then each message.
const WSS_CLIENT: &str = r#"
import asyncio, ssl, sys
from websockets.asyncio.client import connect

async def main(url, ca, n):
    context = ssl.create_default_context(cafile=ca)
    async with connect(url, ssl=context) as ws:
        print("connected", flush=True)
        for _ in range(n):
            print(await ws.recv(), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"#;

#[test]
fn https_and_wss_serve_the_index_and_subscriptions() {
    let pki = Pki::new("main");
    let ca = path(&pki.ca);
    let mut s = start(&pki.server("server"), &[]);
    s.send(json!({"host": "h1", "service": "cpu", "metric": 1}));
    s.expect_printed("got: ");

    let base = format!("localhost:{}", s.http);
    let (status, body, err) = curl(
        &format!("https://{base}/index?query=true"),
        &["--cacert", &ca],
    );
    assert_eq!(status, 200, "{err}");
    assert!(body.contains(r#""host":"h1""#), "{body}");
    // Plain HTTP to the HTTPS port gets nothing.
    let (status, _, _) = curl(&format!("http://{base}/index?query=true"), &[]);
    assert_eq!(status, 0);

    let dir = TempDir::new();
    let script = dir.write("wss_client.py", WSS_CLIENT);
    let query = "service%20%3D%20%22cpu%22";
    let mut child = Command::new("python3")
        .arg(script)
        .args([
            &format!("wss://{base}/index?subscribe=true&query={query}"),
            &ca,
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3 (the test venv on PATH)");
    let mut lines = Lines::spawn("wss client", child.stdout.take().unwrap());
    let _child = KillOnDrop(child);
    lines
        .wait_for(TIMEOUT, |l| l == "connected")
        .unwrap_or_else(|why| panic!("the WSS client did not connect: {why}"));
    // The current match first, then a new one as it is indexed.
    lines
        .wait_for(TIMEOUT, |l| l.contains(r#""host":"h1""#))
        .unwrap_or_else(|why| panic!("no current match over WSS: {why}"));
    s.send(json!({"host": "h2", "service": "cpu", "metric": 2}));
    lines
        .wait_for(TIMEOUT, |l| l.contains(r#""host":"h2""#))
        .unwrap_or_else(|why| panic!("no new event over WSS: {why}"));
    assert_eq!(s.terminate().stats().count("http_tls_failures"), 1);
}

#[test]
fn the_http_token_is_required_on_every_request() {
    let dir = TempDir::new();
    let token = "s3cret-token-0123456789";
    let file = dir.write("token", &format!("{token}\n"));
    let mut s = Server::start_with(
        MODULE,
        "py",
        &["--http", "127.0.0.1:0", "--http-token-file", &path(&file)],
    );
    let url = format!("http://127.0.0.1:{}/index?query=true", s.http);
    let (status, body, _) = curl(&url, &["-D", "-"]);
    assert_eq!(status, 401);
    assert!(
        body.to_lowercase()
            .contains("www-authenticate: basic realm=\"dmon\""),
        "{body}"
    );
    assert!(body.contains("--http-token-file"), "{body}");
    let (status, _, _) = curl(
        &url,
        &["-H", "Authorization: Bearer s3cret-token-0123456788"],
    );
    assert_eq!(status, 401);
    let (status, _, _) = curl(&url, &["-H", &format!("Authorization: Bearer {token}")]);
    assert_eq!(status, 200);
    // As a browser sends it once asked: Basic, any user.
    let (status, _, _) = curl(&url, &["-u", &format!("ops:{token}")]);
    assert_eq!(status, 200);
    let (status, _, _) = curl(&format!("http://127.0.0.1:{}/metrics", s.http), &[]);
    assert_eq!(status, 401);
    s.send(json!({"host": "t1", "service": "cpu"}));
    s.expect_printed("got: ");
    let stats = s.terminate().stats();
    assert_eq!(stats.count("http_unauthorized"), 3);
    assert_eq!(stats.count("http_requests"), 5);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_old_ones() {
    let first = Pki::new("first");
    let second = Pki::new("second");
    let dir = TempDir::new();
    // The files dmon reads: the first CA's certificate, then the second's.
    let live = CertFiles {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server-key.pem"),
    };
    let install = |from: &CertFiles| {
        std::fs::copy(&from.cert, &live.cert).unwrap();
        std::fs::copy(&from.key, &live.key).unwrap();
    };
    install(&first.server("server"));
    let mut s = start(&live, &[]);
    let mut old = PyClient::connected(s.riemann_tcp, &first.ca, None);
    assert_eq!(old.ask("send before cpu 1"), "sent");

    install(&second.server("server"));
    s.signal("HUP");
    s.expect_stderr("the reload", |l| {
        l.contains("SIGHUP: reloaded the TLS certificate and key")
    });
    // New connections get the new certificate...
    let (_, said) = PyClient::connect(s.riemann_tcp, &first.ca, None);
    assert!(said.contains("CERTIFICATE_VERIFY_FAILED"), "{said}");
    let mut new = PyClient::connected(s.riemann_tcp, &second.ca, None);
    assert_eq!(new.ask("send after cpu 2"), "sent");
    // ...and the open one goes on with its session.
    assert_eq!(old.query("true"), json!(["after/cpu", "before/cpu"]));

    // A reload that cannot read the files keeps the certificate in use.
    std::fs::write(&live.key, "not a key\n").unwrap();
    s.signal("HUP");
    let failed = s.expect_stderr("the failed reload", |l| {
        l.contains("SIGHUP: TLS reload failed")
    });
    assert!(
        failed.contains("still using the previous certificate")
            && failed.contains("--tls-key")
            && failed.contains("no PRIVATE KEY in it"),
        "{failed}"
    );
    let mut again = PyClient::connected(s.riemann_tcp, &second.ca, None);
    assert_eq!(again.query("host = \"after\""), json!(["after/cpu"]));
    assert_eq!(s.terminate().stats().count("riemann_tls_failures"), 1);
}

#[test]
fn bad_tls_files_stop_start_up_with_the_flag_and_file_named() {
    let pki = Pki::new("main");
    let a = pki.server("a");
    let b = pki.server("b");
    let (a_cert, a_key, b_key) = (path(&a.cert), path(&a.key), path(&b.key));
    let serve = |tls: &[&str]| {
        let mut args = vec![
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--riemann-tcp",
            "127.0.0.1:0",
        ];
        args.extend(["--riemann-udp", "off"]);
        args.extend(tls);
        let run = run_dmon(&args, None);
        assert!(!run.status.success(), "{tls:?} started: {run:?}");
        run.stderr
    };
    let missing = format!("{}/nowhere.pem", pki.dir().display());
    let err = serve(&["--tls-cert", &missing, "--tls-key", &a_key]);
    assert!(
        err.contains(&format!("--tls-cert {missing}: No such file or directory")),
        "{err}"
    );
    let err = serve(&["--tls-cert", &a_cert, "--tls-key", &b_key]);
    assert!(
        err.contains(&format!(
            "--tls-key {b_key} is not the key of the certificate in --tls-cert {a_cert}"
        )),
        "{err}"
    );
    let err = serve(&["--tls-cert", &a_cert, "--tls-key", &a_cert]);
    assert!(
        err.contains(&format!("--tls-key {a_cert}: no PRIVATE KEY in it")),
        "{err}"
    );
    let err = serve(&["--tls-cert", &a_cert]);
    assert!(err.contains("--tls-key <FILE>"), "{err}");
    let err = serve(&[
        "--tls-cert",
        &a_cert,
        "--tls-key",
        &a_key,
        "--tls-client-ca",
        &missing,
    ]);
    assert!(
        err.contains(&format!("--tls-client-ca {missing}: ")),
        "{err}"
    );
    let err = serve(&["--http-token-file", &missing]);
    assert!(err.contains("--http-token-file needs --http"), "{err}");

    let query = run_dmon(&["query", "--tls-ca", &missing], None);
    assert!(!query.status.success());
    assert!(
        query.stderr.contains(&format!("--tls-ca {missing}: ")),
        "{query:?}"
    );
}

#[test]
fn udp_listeners_off_loopback_are_named_in_one_warning() {
    let pki = Pki::new("main");
    let server = pki.server("server");
    let mut cmd = Command::new(dmon_bin());
    cmd.env("DMON_INSTRUMENT_INTERVAL", "0")
        .args(["serve", "--udp", "0.0.0.0:0", "--riemann-udp", "0.0.0.0:0"])
        .args(["--riemann-tcp", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&server.cert)
        .arg("--tls-key")
        .arg(&server.key);
    let mut spawned = Spawned::start(cmd);
    let warning = spawned
        .stderr
        .wait_for(TIMEOUT, |l| l.contains("UDP cannot be encrypted"))
        .unwrap_or_else(|why| panic!("no warning: {why}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("--udp 127.0.0.1:"), "{warning}");
    assert!(warning.contains("--riemann-udp off"), "{warning}");
}

#[test]
fn the_shell_connects_over_mutual_tls() {
    let pki = Pki::new("main");
    let client = pki.client("client");
    let ca = path(&pki.ca);
    let mut s = start(&pki.server("server"), &["--tls-client-ca", &ca]);
    s.send(json!({"host": "far", "service": "cpu", "state": "warning", "metric": 7}));
    s.expect_printed("got: ");

    let dir = TempDir::new();
    let argv: Vec<String> = [
        "env",
        "NO_COLOR=1",
        &format!("XDG_DATA_HOME={}", dir.path().display()),
        shell_support::dmon_bin(),
        "shell",
        "--connect",
        &format!("127.0.0.1:{}", s.port),
        "--riemann-tcp",
        &format!("127.0.0.1:{}", s.riemann_tcp),
        "--tls-ca",
        &ca,
        "--tls-cert",
        &path(&client.cert),
        "--tls-key",
        &path(&client.key),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let shell = shell_support::Tmux::start(dir.path(), &argv);
    shell.wait_for("the banner", |screen| {
        screen.contains("(Riemann TCP over TLS)") && screen.lines().any(|l| l.starts_with(">>>"))
    });
    shell.type_text(r#"query("metric > 5")"#);
    shell.keys(&["Enter"]);
    shell.wait_for("the query's table", |screen| {
        screen
            .lines()
            .any(|l| l.starts_with("far") && l.contains("warning"))
    });
    shell.keys(&["C-d"]);
    assert_eq!(s.terminate().stats().count("riemann_tls_failures"), 0);
}

/// `forward(..., tls_ca=, tls_cert=, tls_key=)` to a dmon that requires
/// client certificates: the event arrives over mutual TLS, checked
/// against the host name; a forward trusting another CA refuses the
/// receiver's certificate, says so, counts it and retries, and nothing of
/// it arrives.
#[test]
fn forward_goes_over_tls_and_refuses_an_untrusted_receiver() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let client = pki.client("forwarder");
    let mut receiver = start(&pki.server("server"), &["--tls-client-ca", &path(&pki.ca)]);
    let port = receiver.riemann_tcp;
    let mut sender = Server::start_with(
        &format!(
            "from dmon.streams import *\n\n\
             good_stream = where('service = \"good\"', forward(\"localhost\", {port}, tls_ca={:?}, tls_cert={:?}, tls_key={:?}))\n\
             bad_stream = where('service = \"bad\"', forward(\"127.0.0.1\", {port}, tls_ca={:?}))\n",
            path(&pki.ca),
            path(&client.cert),
            path(&client.key),
            path(&other.ca),
        ),
        "py",
        &["--shutdown-grace", "0.5"],
    );
    sender.send(json!({"host": "h", "service": "good"}));
    assert_eq!(receiver.expect_printed("got: ")["service"], "good");

    sender.send(json!({"host": "h", "service": "bad"}));
    let bad = format!("forward tls://127.0.0.1:{port}: ");
    let line = sender.expect_stderr("the refused certificate", |l| {
        l.contains(&bad) && l.contains("retrying in")
    });
    assert!(
        line.contains("TLS handshake with") && line.contains("UnknownIssuer"),
        "{line}"
    );
    receiver.expect_stderr("the receiver's side of it", |l| {
        l.contains("TLS handshake failed")
    });

    let stats = sender.terminate().stats();
    let good = stats.sink("forward", &format!("tls://localhost:{port}"));
    assert_eq!(good["sent"], 1, "{good}");
    let refused = stats.sink("forward", &format!("tls://127.0.0.1:{port}"));
    assert_eq!(refused["sent"], 0, "{refused}");
    assert!(refused["retried"].as_u64().unwrap() >= 1, "{refused}");
    let done = receiver.terminate();
    assert_eq!(done.printed("got: ").len(), 1, "{:?}", done.stdout);
}

/// A `tls_ca` that cannot be read stops the module loading, naming it.
#[test]
fn forward_with_an_unreadable_ca_is_refused_at_start() {
    let mut s = Server::spawn(
        "from dmon.streams import *\n\nstream = forward(\"localhost\", tls_ca=\"/nonexistent/ca.pem\")\n",
        "py",
        &[],
    );
    let status = s.wait_exit(TIMEOUT).expect("dmon exits");
    assert!(!status.success());
    let stderr = s.stderr.read_to_eof(TIMEOUT).join("\n");
    assert!(
        stderr.contains("tls_ca /nonexistent/ca.pem: No such file or directory"),
        "{stderr}"
    );
}
