//! Scenario (t): what TLS costs Riemann TCP. (e)'s server (`where(query)
//! -> index`) and load generator (100 events per acknowledged message,
//! `--connections` connections), in plain text and over TLS with a
//! certificate made for the run, alternately for [`ROUNDS`] rounds, each
//! kind's median printed beside the baseline measured right before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{riemann_server_rate, riemann_total, run_riemann_generator, BenchArgs};
use crate::tls::{Identity, ServerTls};

/// Rounds of each kind; alternating them spreads the machine's drift over
/// both.
const ROUNDS: usize = 3;

pub(super) fn riemann_tls(args: &BenchArgs, baseline_now: impl Fn() -> f64) -> anyhow::Result<()> {
    let dir = ScratchDir::new()?;
    let ca = dir.0.join("ca.pem");
    let tls = Arc::new(self_signed(&dir.0, &ca)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let total = riemann_total(args);
    let base = baseline_now();
    let (mut plain, mut secured) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.push(riemann_server_rate(&runtime, None, total, |to| {
            run_riemann_generator(args, to, None)
        })?);
        secured.push(riemann_server_rate(
            &runtime,
            Some(Arc::clone(&tls)),
            total,
            |to| run_riemann_generator(args, to, Some(&ca)),
        )?);
    }
    let (plain, secured) = (median(&mut plain), median(&mut secured));
    let line = |kind: &str, rate: f64| {
        println!(
            "(t) Riemann TCP {kind:<10} {} connections, median of {ROUNDS} {:>10.0} events/s  {:>5.2}x baseline",
            args.connections,
            rate,
            rate / base,
        );
    };
    line("plain text", plain);
    line("TLS 1.3", secured);
    println!(
        "(t) TLS = {:.0} % of plain text (each connection's handshake included)",
        100.0 * secured / plain
    );
    Ok(())
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// A server certificate for 127.0.0.1, signed by itself; its certificate
/// is also the CA file the generator trusts.
fn self_signed(dir: &Path, ca: &Path) -> anyhow::Result<ServerTls> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert_file, cert.pem())?;
    std::fs::write(&key_file, key.serialize_pem())?;
    std::fs::write(ca, cert.pem())?;
    Ok(ServerTls::load(
        Identity::from_flags(cert_file, key_file),
        None,
    )?)
}

/// A directory for the run's certificate, removed after.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("dmon-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
