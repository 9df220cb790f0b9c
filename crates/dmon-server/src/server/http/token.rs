//! A shared token for `--http` (`--http-token-file`): for dashboards and
//! scrapers behind a proxy that does not do client certificates.
//!
//! A request carries it as `Authorization: Bearer TOKEN` (a proxy or
//! Prometheus' `authorization: credentials_file` adds it) or as the password
//! of HTTP Basic authentication, any user name (a browser asks for it once
//! and then sends it with the dashboard's requests and its WebSocket). It
//! is compared in constant time, so the answer's timing tells nothing about
//! how much of a guess was right.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::{HttpError, Shared};

/// The token every request must carry.
pub struct HttpToken {
    secret: Vec<u8>,
}

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpToken(…)")
    }
}

/// Shorter tokens are guessable; said at start-up.
pub const MIN_TOKEN_BYTES: usize = 16;

impl HttpToken {
    /// The file's first line, without surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<HttpToken, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--http-token-file {}: {e}", path.display()))?;
        let secret = text.lines().next().unwrap_or("").trim();
        if secret.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "--http-token-file {}: the token is {} bytes; use at least {MIN_TOKEN_BYTES} \
                 (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
                path.display(),
                secret.len(),
                path.display()
            ));
        }
        Ok(HttpToken {
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// Whether the request's `Authorization` header carries the token.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let offered = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                rest.trim().as_bytes().to_vec()
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim())
                else {
                    return false;
                };
                // user:password; the user name is not checked.
                match decoded.iter().position(|&b| b == b':') {
                    Some(colon) => decoded[colon + 1..].to_vec(),
                    None => return false,
                }
            }
            _ => return false,
        };
        bool::from(offered.ct_eq(&self.secret))
    }
}

/// Refuses, with 401, a request without the token, when one is set.
pub async fn require(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(token) = &shared.token else {
        return next.run(request).await;
    };
    if token.admits(request.headers()) {
        return next.run(request).await;
    }
    shared.stats().unauthorized.fetch_add(1, Ordering::Relaxed);
    let mut response = HttpError::new(
        StatusCode::UNAUTHORIZED,
        "this dmon requires its token (--http-token-file): send `Authorization: Bearer TOKEN`, or the token as the password of HTTP Basic authentication",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"dmon\", charset=\"UTF-8\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> HttpToken {
        HttpToken {
            secret: b"0123456789abcdef-secret".to_vec(),
        }
    }

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let t = token();
        assert!(t.admits(&with("Bearer 0123456789abcdef-secret")));
        assert!(t.admits(&with("bearer 0123456789abcdef-secret")));
        assert!(t.admits(&with(&basic("anyone:0123456789abcdef-secret"))));
        assert!(t.admits(&with(&basic(":0123456789abcdef-secret"))));
    }

    #[test]
    fn anything_else_is_refused() {
        let t = token();
        assert!(!t.admits(&HeaderMap::new()));
        assert!(!t.admits(&with("Bearer 0123456789abcdef-secreT")));
        assert!(!t.admits(&with("Bearer 0123456789abcdef-secret-and-more")));
        assert!(!t.admits(&with("Bearer 0123456789abcdef")));
        assert!(!t.admits(&with("Token 0123456789abcdef-secret")));
        assert!(!t.admits(&with("0123456789abcdef-secret")));
        assert!(!t.admits(&with(&basic("0123456789abcdef-secret"))));
        assert!(!t.admits(&with("Basic !!!not-base64")));
    }
}
