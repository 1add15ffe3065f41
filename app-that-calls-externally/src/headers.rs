//! Header rewriting at the proxy's hop: hop-by-hop headers stay behind, everything else
//! (the Istio trace headers included) passes through untouched.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{
    CONNECTION, EXPECT, HOST, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1, plus the
/// non-standard Keep-Alive and Proxy-Connection).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// The names this hop acts on that one pass over a header map found. Most requests carry
/// none of them, and then nothing is removed or looked up again.
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    connection: bool,
    hop_by_hop: bool,
    expect: bool,
    forwarded_for: bool,
}

impl Found {
    fn scan(headers: &HeaderMap) -> Self {
        let mut found = Self::default();
        // `keys` yields each name once, however many lines carry it. Matched as text (names
        // are lower case): a length switch and one comparison, where comparing `HeaderName`s
        // against the list took one comparison per entry.
        for name in headers.keys() {
            match name.as_str() {
                "connection" => found.connection = true,
                "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade" => {
                    found.hop_by_hop = true;
                }
                "expect" => found.expect = true,
                "x-forwarded-for" => found.forwarded_for = true,
                _ => {}
            }
        }
        found
    }
}

/// Removes the hop-by-hop headers and any header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let found = Found::scan(headers);
    strip_found(headers, found);
}

fn strip_found(headers: &mut HeaderMap, found: Found) {
    if found.connection {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            // The usual tokens name no header (or one removed below); skip parsing them.
            .filter(|token| {
                !token.is_empty()
                    && !token.eq_ignore_ascii_case("close")
                    && !token.eq_ignore_ascii_case("keep-alive")
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    if found.connection || found.hop_by_hop {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// Prepares a client's request headers for the upstream: hop-by-hop headers removed, `Host`
/// set to the upstream's authority (the mesh routes by it), the peer appended to
/// `X-Forwarded-For`.
pub fn prepare_request(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    peer: Option<IpAddr>,
    proxy_authorization: Option<&HeaderValue>,
) {
    let found = Found::scan(headers);
    strip_found(headers, found);
    // This hop answers `Expect: 100-continue` itself (hyper sends the 100 when the body is
    // first read), so the upstream must not be asked to as well.
    if found.expect {
        headers.remove(EXPECT);
    }
    headers.insert(HOST, host.clone());
    if let Some(peer) = peer {
        let value = if found.forwarded_for {
            joined_forwarded_for(headers, peer)
        } else {
            peer_value(peer)
        };
        match value {
            Ok(value) => {
                headers.insert(X_FORWARDED_FOR, value);
            }
            // Unreachable: the parts were valid header values and an IP address.
            Err(_) => tracing::debug!("X-Forwarded-For left unchanged: invalid value"),
        }
    }
    if let Some(credentials) = proxy_authorization {
        headers.insert(PROXY_AUTHORIZATION, credentials.clone());
    }
}

thread_local! {
    /// The last peer's `X-Forwarded-For` value. Behind a sidecar every request comes from the
    /// same address (Envoy connects from 127.0.0.6), so this nearly always spares formatting
    /// and allocating it again.
    static LAST_PEER: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// The peer alone, the usual `X-Forwarded-For` of a request that arrives without one.
fn peer_value(peer: IpAddr) -> Result<HeaderValue, InvalidHeaderValue> {
    LAST_PEER.with_borrow_mut(|last| match last {
        Some((address, value)) if *address == peer => Ok(value.clone()),
        _ => {
            let value = format_peer(peer)?;
            *last = Some((peer, value.clone()));
            Ok(value)
        }
    })
}

fn format_peer(peer: IpAddr) -> Result<HeaderValue, InvalidHeaderValue> {
    // The longest IPv6 text form has 45 characters; format on the stack, copy once.
    let mut text = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    // Both forms fit, so writing cannot fail.
    let _ = write!(cursor, "{}", peer.to_canonical());
    let written = usize::try_from(cursor.position()).unwrap_or(0);
    HeaderValue::from_bytes(&text[..written])
}

/// `<existing values>, <peer>`; several incoming header lines are joined in order into one.
fn joined_forwarded_for(
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut value = Vec::with_capacity(64);
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        let existing = existing.as_bytes().trim_ascii();
        if !existing.is_empty() {
            value.extend_from_slice(existing);
            value.extend_from_slice(b", ");
        }
    }
    // Writing into a Vec cannot fail.
    let _ = write!(value, "{}", peer.to_canonical());
    HeaderValue::from_maybe_shared(Bytes::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Hop"),
            ("connection", "x-other-hop , close"),
            ("x-hop", "1"),
            ("x-other-hop", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "kept"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-end-to-end", "content-length"]);
    }

    #[test]
    fn request_gets_upstream_host_and_forwarded_for() {
        let mut headers = map(&[
            ("host", "service-that-calls-externally"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2 "),
            ("expect", "100-continue"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        let host = HeaderValue::from_static("hello.external");
        prepare_request(
            &mut headers,
            &host,
            Some("127.0.0.1".parse().unwrap()),
            None,
        );
        assert_eq!(headers["host"], "hello.external");
        assert_eq!(headers.get_all("host").iter().count(), 1);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(headers.get_all("x-forwarded-for").iter().count(), 1);
        assert!(!headers.contains_key("expect"));
        assert!(headers.contains_key("traceparent"));
    }

    #[test]
    fn forwarded_for_starts_with_the_peer_and_unmaps_ipv4() {
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_static("h");
        prepare_request(
            &mut headers,
            &host,
            Some("::ffff:10.1.2.3".parse().unwrap()),
            None,
        );
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        let mut headers = HeaderMap::new();
        prepare_request(&mut headers, &host, Some("::1".parse().unwrap()), None);
        assert_eq!(headers["x-forwarded-for"], "::1");
    }

    #[test]
    fn every_hop_by_hop_name_is_found() {
        for name in HOP_BY_HOP {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            let found = Found::scan(&headers);
            assert!(found.connection || found.hop_by_hop, "{name} not found");
        }
    }

    #[test]
    fn strips_hop_by_hop_headers_without_a_connection_header() {
        let mut headers = map(&[
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-end-to-end"]);
    }

    #[test]
    fn forwarded_for_names_each_peer_in_turn() {
        let host = HeaderValue::from_static("h");
        for peer in ["10.0.0.1", "10.0.0.1", "2001:db8::7", "10.0.0.1"] {
            let mut headers = HeaderMap::new();
            prepare_request(&mut headers, &host, Some(peer.parse().unwrap()), None);
            assert_eq!(headers["x-forwarded-for"], peer);
        }
    }

    #[test]
    fn proxy_credentials_replace_the_clients() {
        let mut headers = map(&[("proxy-authorization", "Basic Y2xpZW50")]);
        let host = HeaderValue::from_static("h");
        let ours = HeaderValue::from_static("Basic b3Vycw==");
        prepare_request(&mut headers, &host, None, Some(&ours));
        assert_eq!(headers["proxy-authorization"], "Basic b3Vycw==");
    }
}
