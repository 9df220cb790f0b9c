//! The flags that say where `email()` sends mail and how (see
//! [`crate::sinks::email`]), shared by every command that runs a server.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail};

use crate::console::LineSink;
use crate::sinks::email::{self, Login, Mailer, Password, Relay, SmtpServer, SmtpTls};

/// Where the relay's password may come from besides --smtp-password-file:
/// never a flag, which any user of the machine could read in `ps`.
pub const PASSWORD_ENV: &str = "DMON_SMTP_PASSWORD";

/// What `--smtp` names: a relay, or `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpTarget {
    Relay(SmtpServer),
    /// Print each mail instead of sending it.
    Log,
}

impl std::str::FromStr for SmtpTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("log") {
            return Ok(SmtpTarget::Log);
        }
        s.parse()
            .map(SmtpTarget::Relay)
            .map_err(|e| format!("{e}: expected HOST:PORT, or \"log\" to print mail instead"))
    }
}

/// `--smtp-tls`'s values: the modes' own names, which `--help` lists.
fn tls_modes() -> impl clap::builder::TypedValueParser<Value = SmtpTls> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(SmtpTls::ALL.map(SmtpTls::name))
        .map(|name| name.parse().expect("one of SmtpTls::ALL's names"))
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SmtpOpts {
    /// SMTP relay that email() streams send through (localhost:25 when not
    /// given). "log" sends nothing: each mail (From, To, Subject, body) is
    /// printed where printer() lines go (stdout; in the shell, above the
    /// prompt) and counted as sent (mails_sent), to try alerts without a
    /// relay.
    #[arg(long, value_name = "HOST:PORT|log", env = "DMON_SMTP")]
    pub smtp: Option<SmtpTarget>,
    /// How the connection to the relay is secured: auto (STARTTLS when the
    /// relay offers it, plain otherwise, but never a login in the clear),
    /// starttls (STARTTLS required: no mail to a relay without it), tls
    /// (TLS from the first byte, as on port 465) or none (plain SMTP). The
    /// relay's certificate is checked against the system's roots and
    /// --smtp-ca, except by auto with neither --smtp-user nor --smtp-ca
    /// (opportunistic, as an MTA's: encrypted rather than plain).
    #[arg(
        long,
        value_name = "MODE",
        env = "DMON_SMTP_TLS",
        value_parser = tls_modes(),
        default_value = "auto"
    )]
    pub smtp_tls: SmtpTls,
    /// User to log in to the relay as (SMTP AUTH). The password comes from
    /// the environment variable DMON_SMTP_PASSWORD or from
    /// --smtp-password-file, never from the command line.
    #[arg(long, value_name = "USER", env = "DMON_SMTP_USER")]
    pub smtp_user: Option<String>,
    /// File whose first line is the password of --smtp-user (instead of
    /// DMON_SMTP_PASSWORD).
    #[arg(long, value_name = "FILE", env = "DMON_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// PEM file of a CA to trust, besides the system's roots, for the
    /// relay's certificate (one a private CA signed).
    #[arg(long, value_name = "FILE", env = "DMON_SMTP_CA")]
    pub smtp_ca: Option<PathBuf>,
}

impl SmtpOpts {
    /// Whether any of the relay's flags was given: only then is the relay
    /// checked at start-up. Left to the default (localhost:25), it may well
    /// be absent on a machine whose streams never mail.
    pub fn configured(&self) -> bool {
        self.smtp.is_some() || self.smtp_tls != SmtpTls::Auto || self.smtp_user.is_some()
    }

    /// The relay these flags (and DMON_SMTP_PASSWORD) describe, or why they
    /// do not make one, naming the flag.
    pub fn relay(&self) -> anyhow::Result<Relay> {
        self.relay_with(std::env::var_os(PASSWORD_ENV))
    }

    /// [`Self::relay`], with the environment's password given.
    fn relay_with(&self, env_password: Option<OsString>) -> anyhow::Result<Relay> {
        let env_password = match env_password {
            // An empty variable is an unset one, as clap takes them.
            Some(p) if p.is_empty() => None,
            Some(p) => Some(
                p.into_string()
                    .ok()
                    .and_then(Password::new)
                    .ok_or_else(|| anyhow!("{PASSWORD_ENV} is not valid UTF-8"))?,
            ),
            None => None,
        };
        let file_password = match &self.smtp_password_file {
            Some(path) => {
                Some(Password::from_file(path).map_err(|e| anyhow!("--smtp-password-file: {e}"))?)
            }
            None => None,
        };
        let password = match (env_password, file_password) {
            (Some(_), Some(_)) => bail!(
                "the SMTP password is given twice, by {PASSWORD_ENV} and by \
                 --smtp-password-file: keep one"
            ),
            (env, file) => env.or(file),
        };
        let login = match (&self.smtp_user, password) {
            (Some(user), Some(password)) => Some(Login {
                user: user.clone(),
                password,
            }),
            (Some(user), None) => bail!(
                "--smtp-user {user:?} needs a password: set {PASSWORD_ENV} or give \
                 --smtp-password-file FILE"
            ),
            (None, Some(_)) => {
                let source = match self.smtp_password_file {
                    Some(_) => "--smtp-password-file",
                    None => PASSWORD_ENV,
                };
                bail!("an SMTP password is given ({source}) but no --smtp-user")
            }
            (None, None) => None,
        };
        let ca = match &self.smtp_ca {
            Some(_) if self.smtp_tls == SmtpTls::None => {
                bail!("--smtp-ca has no use with --smtp-tls none")
            }
            Some(path) => Some(email::load_ca(path).map_err(|e| anyhow!("--smtp-ca: {e}"))?),
            None => None,
        };
        let server = match &self.smtp {
            Some(SmtpTarget::Relay(server)) => server.clone(),
            Some(SmtpTarget::Log) | None => SmtpServer::default(),
        };
        Relay::new(server, self.smtp_tls, login, ca).map_err(|e| match &self.smtp_ca {
            Some(path) => anyhow!("--smtp-ca {}: {e}", path.display()),
            None => anyhow!("--smtp-tls {}: {e}", self.smtp_tls.name()),
        })
    }

    /// The mailer these flags describe, started; a configured relay is
    /// checked in the background (see [`email::spawn_check`]). With
    /// `--smtp log`, mail goes to `console`, and there is no relay to check.
    pub fn start_mailer(&self, console: Arc<dyn LineSink>) -> anyhow::Result<Mailer> {
        if self.smtp == Some(SmtpTarget::Log) {
            self.check_log()?;
            tracing::info!("email: --smtp log: each mail is printed, not sent");
            return Ok(Mailer::start_log(console));
        }
        let relay = self.relay()?;
        if let (SmtpTls::None, Some(user)) = (self.smtp_tls, relay.user()) {
            tracing::warn!(
                "email: --smtp-tls none: the password of {user:?} goes to {} in the clear",
                relay.target()
            );
        }
        if self.configured() {
            email::spawn_check(relay.clone());
        }
        Ok(Mailer::start_relay(relay))
    }
}

impl SmtpOpts {
    /// With `--smtp log`, a relay's flag is a mistake (or a forgotten
    /// flag): said at start-up rather than ignored.
    fn check_log(&self) -> anyhow::Result<()> {
        let given = [
            (self.smtp_tls != SmtpTls::Auto, "--smtp-tls"),
            (self.smtp_user.is_some(), "--smtp-user"),
            (self.smtp_password_file.is_some(), "--smtp-password-file"),
            (self.smtp_ca.is_some(), "--smtp-ca"),
        ];
        match given.iter().find(|(given, _)| *given) {
            Some((_, flag)) => bail!(
                "{flag} has no use with --smtp log, which prints each mail instead of sending it"
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A directory of files for one test, removed after it.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "dmon-smtp-opts-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self) -> &Path {
            &self.0
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn opts() -> SmtpOpts {
        SmtpOpts {
            smtp: Some("127.0.0.1:2525".parse().unwrap()),
            ..SmtpOpts::default()
        }
    }

    fn error(opts: &SmtpOpts, env: Option<&str>) -> String {
        let e = opts.relay_with(env.map(OsString::from)).unwrap_err();
        format!("{e:#}")
    }

    #[test]
    fn a_login_needs_a_user_and_one_password() {
        let user = SmtpOpts {
            smtp_user: Some("alerts".into()),
            ..opts()
        };
        let relay = user.relay_with(Some("s3cret".into())).unwrap();
        assert_eq!(relay.user(), Some("alerts"));
        assert!(!format!("{relay:?}").contains("s3cret"), "{relay:?}");

        let e = error(&user, None);
        assert!(e.contains("--smtp-user \"alerts\" needs a password"), "{e}");
        assert!(e.contains("DMON_SMTP_PASSWORD") && e.contains("--smtp-password-file"));
        // Empty is unset.
        assert!(error(&user, Some("")).contains("needs a password"));

        let e = error(&opts(), Some("s3cret"));
        assert_eq!(
            e,
            "an SMTP password is given (DMON_SMTP_PASSWORD) but no --smtp-user"
        );
        assert!(!e.contains("s3cret"));

        let dir = TempDir::new();
        let file = dir.write("password", "from-file\n");
        let both = SmtpOpts {
            smtp_password_file: Some(file),
            ..user.clone()
        };
        assert!(error(&both, Some("s3cret")).contains("given twice"));
        assert_eq!(both.relay_with(None).unwrap().user(), Some("alerts"));
    }

    #[test]
    fn a_bad_password_file_or_ca_names_its_flag() {
        let dir = TempDir::new();
        let missing = SmtpOpts {
            smtp_user: Some("alerts".into()),
            smtp_password_file: Some(dir.path().join("nope")),
            ..opts()
        };
        let e = error(&missing, None);
        assert!(e.starts_with("--smtp-password-file: cannot read "), "{e}");
        let empty = SmtpOpts {
            smtp_password_file: Some(dir.write("empty", "\n")),
            ..missing.clone()
        };
        assert!(error(&empty, None).contains("has an empty first line"));

        let not_pem = SmtpOpts {
            smtp_ca: Some(dir.write("ca.pem", "not a certificate\n")),
            ..opts()
        };
        let e = error(&not_pem, None);
        assert!(
            e.starts_with("--smtp-ca: ") && e.contains("holds no PEM certificate"),
            "{e}"
        );
        let bad_der = SmtpOpts {
            smtp_ca: Some(dir.write(
                "bad.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )),
            ..opts()
        };
        assert!(error(&bad_der, None).starts_with("--smtp-ca "));
        let plain_with_ca = SmtpOpts {
            smtp_tls: SmtpTls::None,
            ..not_pem
        };
        assert_eq!(
            error(&plain_with_ca, None),
            "--smtp-ca has no use with --smtp-tls none"
        );
    }

    #[test]
    fn smtp_log_prints_mail_and_takes_no_relay_flag() {
        assert_eq!("log".parse::<SmtpTarget>(), Ok(SmtpTarget::Log));
        assert_eq!("LOG".parse::<SmtpTarget>(), Ok(SmtpTarget::Log));
        assert!(matches!(
            "mail.example.com:25".parse::<SmtpTarget>(),
            Ok(SmtpTarget::Relay(SmtpServer { port: 25, .. }))
        ));
        let e = "logs".parse::<SmtpTarget>().unwrap_err();
        assert!(e.contains("expected HOST:PORT, or \"log\""), "{e}");

        let log = SmtpOpts {
            smtp: Some(SmtpTarget::Log),
            ..SmtpOpts::default()
        };
        assert!(log.check_log().is_ok());
        let with_user = SmtpOpts {
            smtp_user: Some("alerts".into()),
            ..log.clone()
        };
        assert_eq!(
            with_user.check_log().unwrap_err().to_string(),
            "--smtp-user has no use with --smtp log, which prints each mail instead of sending it"
        );
        let with_tls = SmtpOpts {
            smtp_tls: SmtpTls::Tls,
            ..log
        };
        assert!(with_tls
            .check_log()
            .unwrap_err()
            .to_string()
            .starts_with("--smtp-tls "));
    }

    #[test]
    fn only_a_configured_relay_is_checked() {
        assert!(!SmtpOpts::default().configured());
        assert!(opts().configured());
        let tls = SmtpOpts {
            smtp_tls: SmtpTls::Tls,
            ..SmtpOpts::default()
        };
        assert!(tls.configured());
        let relay = SmtpOpts::default().relay_with(None).unwrap();
        assert_eq!(relay.target(), "localhost:25");
        assert_eq!(relay.tls, SmtpTls::Auto);
    }
}
