//! Upgrade requests on the request path: what the client asked to switch to
//! (HTTP/1.1 `Upgrade`, or an h2 extended CONNECT), how the member is asked,
//! and the client's answer when the member switched (the tunnel itself is
//! [`crate::proxy::tunnel`]'s).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use crate::config::table::{ClusterEntry, MemberEntry};
use crate::proxy::body::ProxyBody;
use crate::proxy::tunnel::TunnelSlot;
use crate::proxy::{ProxyError, remove_hop_by_hop};
use crate::upstream::exchange::Exchange;
use crate::upstream::h1::ResponseHead;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// A request to switch protocols: HTTP/1.1 `Upgrade` with `Connection:
/// upgrade`, or an h2 extended CONNECT (RFC 8441), which the member gets as
/// the HTTP/1.1 upgrade it stands for.
#[derive(Debug)]
pub(super) struct Upgrade {
    /// What `Upgrade` says (`websocket`, ...), or the `:protocol` of an extended CONNECT.
    protocol: HeaderValue,
    extended_connect: bool,
}

impl Upgrade {
    /// What the client asked to upgrade to, if it did (read before the
    /// hop-by-hop headers go).
    pub(super) fn asked(parts: &http::request::Parts) -> Option<Upgrade> {
        if parts.method == Method::CONNECT {
            let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
            return Some(Upgrade {
                protocol: HeaderValue::from_str(protocol.as_str()).ok()?,
                extended_connect: true,
            });
        }
        if parts.version != Version::HTTP_11 || !connection_has(&parts.headers, "upgrade") {
            return None;
        }
        // Several `Upgrade` lines are one list (RFC 9110, 5.3).
        let mut values = parts.headers.get_all(header::UPGRADE).iter();
        let mut protocol = values.next()?.clone();
        for more in values {
            let joined = [protocol.as_bytes(), b", ", more.as_bytes()].concat();
            protocol = HeaderValue::from_bytes(&joined).ok()?;
        }
        Some(Upgrade {
            protocol,
            extended_connect: false,
        })
    }

    /// Asks the member to upgrade (after [`remove_hop_by_hop`]); an extended
    /// CONNECT becomes the `GET` it stands for, with the `Sec-WebSocket-Key`
    /// that RFC 8441 leaves out.
    pub(super) fn ask_member(&self, parts: &mut http::request::Parts) {
        parts.headers.insert(header::UPGRADE, self.protocol.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if self.extended_connect {
            parts.method = Method::GET;
            if self.protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
                && !parts.headers.contains_key(&SEC_WEBSOCKET_KEY)
            {
                parts
                    .headers
                    .insert(SEC_WEBSOCKET_KEY.clone(), websocket_key());
            }
        }
    }
}

/// Whether `Connection` names `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A random `Sec-WebSocket-Key`: 16 bytes in base64 (RFC 6455, 4.1).
fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = fastrand::u128(..).to_be_bytes();
    let mut key = Vec::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            key.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    key.extend_from_slice(b"==");
    HeaderValue::from_bytes(&key)
        .unwrap_or_else(|_| HeaderValue::from_static("c3dpdGNoeWFyZC1rZXkxMg=="))
}

/// The member switched protocols: the client gets the member's 101 (or, on
/// an extended CONNECT, the 200 that stands for it), and the listener the
/// member's connection to tunnel once the client's is upgraded too.
pub(super) fn switch(
    head: ResponseHead,
    exchange: Exchange,
    upgrade: &Upgrade,
    cluster: &ClusterEntry,
    member: &MemberEntry,
) -> Result<Response<ProxyBody>, ProxyError> {
    let switched = exchange
        .into_switched()
        .map_err(|error| ProxyError::Upstream {
            member: member.shared.id.clone(),
            error: error.to_string(),
        })?;
    let mut headers = head.headers;
    let protocol = headers.get(header::UPGRADE).cloned();
    remove_hop_by_hop(&mut headers);
    let mut response = Response::new(ProxyBody::Local(None));
    if upgrade.extended_connect {
        headers.remove(&SEC_WEBSOCKET_ACCEPT);
        headers.remove(header::CONTENT_LENGTH);
    } else {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(
            header::UPGRADE,
            protocol.unwrap_or_else(|| upgrade.protocol.clone()),
        );
    }
    *response.headers_mut() = headers;
    response.extensions_mut().insert(TunnelSlot::new(
        switched,
        cluster.idle_timeout,
        member.shared.id.clone(),
    ));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn request_parts(version: Version, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = Request::builder().version(version).uri("/ws");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn an_upgrade_is_asked_with_both_upgrade_and_connection_upgrade_on_http_1_1() {
        let asked = Upgrade::asked(&request_parts(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket"),
            ],
        ))
        .unwrap();
        assert_eq!(asked.protocol, "websocket");
        assert!(!asked.extended_connect);
        for (version, headers) in [
            (Version::HTTP_11, &[("upgrade", "websocket")][..]),
            (Version::HTTP_11, &[("connection", "upgrade")][..]),
            (
                Version::HTTP_10,
                &[("connection", "upgrade"), ("upgrade", "websocket")][..],
            ),
        ] {
            assert!(Upgrade::asked(&request_parts(version, headers)).is_none());
        }
    }

    #[test]
    fn an_upgrade_survives_the_hop_by_hop_removal_and_nothing_else_does() {
        let mut parts = request_parts(
            Version::HTTP_11,
            &[
                ("connection", "upgrade, x-secret"),
                ("upgrade", "websocket"),
                ("x-secret", "1"),
            ],
        );
        let asked = Upgrade::asked(&parts).unwrap();
        remove_hop_by_hop(&mut parts.headers);
        asked.ask_member(&mut parts);
        assert_eq!(parts.headers[header::UPGRADE], "websocket");
        assert_eq!(parts.headers[header::CONNECTION], "upgrade");
        assert!(!parts.headers.contains_key("x-secret"));
    }

    #[test]
    fn an_extended_connect_becomes_a_get_with_a_websocket_key() {
        let mut parts = request_parts(Version::HTTP_2, &[("sec-websocket-version", "13")]);
        parts.method = Method::CONNECT;
        parts
            .extensions
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let asked = Upgrade::asked(&parts).unwrap();
        assert!(asked.extended_connect);
        asked.ask_member(&mut parts);
        assert_eq!(parts.method, Method::GET);
        let key = parts.headers[&SEC_WEBSOCKET_KEY].to_str().unwrap();
        assert_eq!(key.len(), 24, "{key}");
        assert!(key.ends_with("=="), "{key}");
        assert!(
            key[..22]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "{key}"
        );
        assert_ne!(websocket_key(), websocket_key());
    }

    #[test]
    fn several_upgrade_lines_are_one_list() {
        let mut parts = request_parts(Version::HTTP_11, &[("connection", "upgrade")]);
        parts
            .headers
            .append(header::UPGRADE, HeaderValue::from_static("a/1"));
        parts
            .headers
            .append(header::UPGRADE, HeaderValue::from_static("b/2"));
        assert_eq!(Upgrade::asked(&parts).unwrap().protocol, "a/1, b/2");
    }
}
