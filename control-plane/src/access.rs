//! Who may use the REST API: bearer tokens (`--api-token`, `--api-token-file`).
//!
//! **A token is never kept, logged or echoed as given**: only its SHA-256
//! digest is held, a presented token is hashed and compared in constant time
//! against every digest, and no error message quotes the `Authorization`
//! header. With no token configured the API is open (as before), which the
//! binary warns about at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, Method, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type TokenDigest = [u8; 32];

/// The tokens the API accepts and whether reads need one too; cheap to share.
pub struct ApiAccess {
    /// `None`: the API is open.
    tokens: Option<ArcSwap<Vec<TokenDigest>>>,
    /// Reads (`GET`, `HEAD`) need a token too (`/healthz` and the
    /// dashboard's static files stay open).
    read_auth: bool,
    /// The token file, re-read by [`ApiAccess::reload`].
    file: Option<PathBuf>,
    /// The `--api-token` given on the command line, kept across reloads.
    flag_token: Option<TokenDigest>,
}

/// Why a request was refused, and how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header, or not `Bearer <token>` (401).
    Unauthorized,
    /// A token that is not one of ours (403).
    Forbidden,
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read --api-token-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--api-token-file {} has no token (one a line; # starts a comment)", path.display())]
    Empty { path: PathBuf },
    #[error("--api-token-file {} line {line}: a token is one word without spaces", path.display())]
    Spaces { path: PathBuf, line: usize },
    #[error("--api-token is empty or has spaces")]
    BadFlag,
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digests: a Debug print ends up in logs.
        f.debug_struct("ApiAccess")
            .field(
                "tokens",
                &self.tokens.as_ref().map(|t| t.load().len()).unwrap_or(0),
            )
            .field("read_auth", &self.read_auth)
            .field("file", &self.file)
            .finish()
    }
}

impl Default for ApiAccess {
    fn default() -> Self {
        ApiAccess::open()
    }
}

impl ApiAccess {
    /// No token: every request is let through.
    pub fn open() -> Self {
        ApiAccess {
            tokens: None,
            read_auth: false,
            file: None,
            flag_token: None,
        }
    }

    /// Tokens from `--api-token` and/or `--api-token-file`; `open()` when neither is given.
    pub fn new(
        token: Option<&str>,
        file: Option<&Path>,
        read_auth: bool,
    ) -> Result<Self, TokenFileError> {
        let flag_token = match token {
            Some(token) => {
                let token = token.trim();
                if token.is_empty() || token.contains(char::is_whitespace) {
                    return Err(TokenFileError::BadFlag);
                }
                Some(digest(token))
            }
            None => None,
        };
        let mut digests: Vec<TokenDigest> = flag_token.into_iter().collect();
        if let Some(file) = file {
            digests.extend(read_token_file(file)?);
        }
        if digests.is_empty() {
            return Ok(ApiAccess {
                read_auth,
                ..ApiAccess::open()
            });
        }
        Ok(ApiAccess {
            tokens: Some(ArcSwap::from_pointee(digests)),
            read_auth,
            file: file.map(Path::to_path_buf),
            flag_token,
        })
    }

    /// Whether any token is configured (else the API is open).
    pub fn is_protected(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether reads need a token too.
    pub fn read_auth(&self) -> bool {
        self.read_auth
    }

    /// Re-reads the token file (on SIGHUP); on an error the tokens in use stay.
    /// Returns how many tokens are accepted now.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let (Some(tokens), Some(file)) = (&self.tokens, &self.file) else {
            return Ok(self.tokens.as_ref().map_or(0, |t| t.load().len()));
        };
        let mut digests: Vec<TokenDigest> = self.flag_token.into_iter().collect();
        digests.extend(read_token_file(file)?);
        let count = digests.len();
        tokens.store(Arc::new(digests));
        Ok(count)
    }

    /// Whether a request with this method, path and headers may go on.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        // The dashboard's files hold no data: its page asks for the token.
        if read && (!self.read_auth || path == "/healthz" || crate::dashboard::is_asset(path)) {
            return Ok(());
        }
        let presented = bearer(headers).ok_or(Refusal::Unauthorized)?;
        let presented = digest(presented);
        // Every digest is compared, so the time does not say which one matched.
        let matched = tokens
            .load()
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(&presented)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Refusal::Forbidden)
        }
    }
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The `error` of the answer; never quotes what was sent.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Unauthorized => {
                "this request needs an API token: send the header \"Authorization: Bearer <token>\""
            }
            Refusal::Forbidden => {
                "the API token in the Authorization header is not one this control plane accepts"
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme without case), if well formed.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// One token a line; blank lines and `#` comments ignored; at least one token.
fn read_token_file(path: &Path) -> Result<Vec<TokenDigest>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tokens(&text).map_err(|e| match e {
        ParseError::Empty => TokenFileError::Empty {
            path: path.to_path_buf(),
        },
        ParseError::Spaces(line) => TokenFileError::Spaces {
            path: path.to_path_buf(),
            line,
        },
    })
}

enum ParseError {
    Empty,
    Spaces(usize),
}

fn parse_tokens(text: &str) -> Result<Vec<TokenDigest>, ParseError> {
    let mut digests = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() || token.starts_with('#') {
            continue;
        }
        if token.contains(char::is_whitespace) {
            return Err(ParseError::Spaces(index + 1));
        }
        digests.push(digest(token));
    }
    if digests.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(auth) = auth {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        }
        headers
    }

    #[test]
    fn open_lets_everything_through() {
        let access = ApiAccess::new(None, None, true).unwrap();
        assert!(!access.is_protected());
        assert_eq!(
            access.check(&Method::PUT, "/api/v1/config", &headers(None)),
            Ok(())
        );
    }

    #[test]
    fn writes_need_a_known_token_and_reads_by_flag() {
        let access = ApiAccess::new(Some("s3cret"), None, false).unwrap();
        let put = |auth| access.check(&Method::PUT, "/api/v1/config", &headers(auth));
        assert_eq!(put(None), Err(Refusal::Unauthorized));
        assert_eq!(put(Some("Basic abc")), Err(Refusal::Unauthorized));
        assert_eq!(put(Some("Bearer")), Err(Refusal::Unauthorized));
        assert_eq!(put(Some("Bearer ")), Err(Refusal::Unauthorized));
        assert_eq!(put(Some("Bearer wrong")), Err(Refusal::Forbidden));
        assert_eq!(put(Some("Bearer s3cret")), Ok(()));
        assert_eq!(put(Some("bearer s3cret")), Ok(()));
        assert_eq!(
            access.check(&Method::GET, "/api/v1/config", &headers(None)),
            Ok(())
        );

        let access = ApiAccess::new(Some("s3cret"), None, true).unwrap();
        assert_eq!(
            access.check(&Method::GET, "/api/v1/config", &headers(None)),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            access.check(&Method::GET, "/metrics", &headers(Some("Bearer s3cret"))),
            Ok(())
        );
        assert_eq!(
            access.check(&Method::GET, "/healthz", &headers(None)),
            Ok(())
        );
        for asset in ["/", "/dashboard.js", "/dashboard.css"] {
            assert_eq!(access.check(&Method::GET, asset, &headers(None)), Ok(()));
            assert_eq!(
                access.check(&Method::POST, asset, &headers(None)),
                Err(Refusal::Unauthorized)
            );
        }
    }

    #[test]
    fn token_files_skip_comments_and_refuse_empty_or_spaced() {
        assert!(matches!(
            parse_tokens("# none\n\n  \n"),
            Err(ParseError::Empty)
        ));
        assert!(matches!(
            parse_tokens("a\nb c\n"),
            Err(ParseError::Spaces(2))
        ));
        assert_eq!(
            parse_tokens("# old\none\n\n  two  \n")
                .ok()
                .map(|d| d.len()),
            Some(2)
        );
    }

    #[test]
    fn debug_shows_no_digest() {
        let access = ApiAccess::new(Some("s3cret"), None, false).unwrap();
        let text = format!("{access:?}");
        assert!(text.contains("tokens: 1"), "{text}");
        assert!(!text.contains("s3cret"));
    }
}
