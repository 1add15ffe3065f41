//! Property-based fuzzing of the code that parses or rewrites untrusted input: the duration
//! parser every program's configuration uses, the proxy's URL joining and hop-by-hop header
//! filtering, and the caller's body sanitiser, cap and summary counts.
//!
//! CI runs each property with proptest's default of 256 cases; a longer run:
//! `PROPTEST_CASES=100000 cargo test -p resilience-tests --release fuzz`.
//! A failing case is shrunk and printed, and saved in `tests/fuzz.proptest-regressions` so that
//! the next run tries it first (commit that file with the fix).

use std::net::IpAddr;
use std::time::Duration;

use crate::support::{figure, loading_blocking};
use app_that_calls_externally::UpstreamUrl;
use app_that_calls_externally::headers::{prepare_request, strip_hop_by_hop};
use demo_common::{parse_duration, parse_positive_duration};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::Uri;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use traffic::body::{CappedBody, TRUNCATED_MARKER, printable};
use traffic::summary::{MAX_DISTINCT, OTHER_LABEL, Tally};

/// The hop-by-hop headers the proxy must never pass on (RFC 9110 7.6.1, plus two old ones).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn config() -> ProptestConfig {
    // Cases from PROPTEST_CASES when set, else 256.
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Durations are read through `f64`, whose 53-bit mantissa holds every nanosecond only below
/// 2^23 seconds (97 days); beyond that a decimal like `8388608.117s` comes back 1ns off. Every
/// duration the programs take (intervals, timeouts, drains) is far below.
const EXACT_MILLIS: u64 = (1 << 23) * 1000;

#[test]
fn fuzz_case_count() {
    figure(
        "fuzz",
        format!(
            "{} cases per property (PROPTEST_CASES to change)",
            config().cases
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// Durations: `demo_common::parse_duration`.

/// Text near the duration grammar, where the parser's edge cases are.
fn duration_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9 .smhµxe+-]{0,14}",
        "[0-9]{0,25}(\\.[0-9]{0,12})?(ms|s|m|h|)",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_duration_parser_never_panics_and_positive_means_positive(text in duration_like()) {
        let _loading = loading_blocking();
        let parsed = parse_duration(&text);
        let positive = parse_positive_duration(&text);
        match (parsed, positive) {
            (Ok(duration), Ok(positive)) => {
                prop_assert_eq!(duration, positive);
                prop_assert!(!positive.is_zero());
            }
            (Ok(duration), Err(_)) => prop_assert!(duration.is_zero()),
            (Err(_), positive) => prop_assert!(positive.is_err()),
        }
    }

    /// What the programs print (`format_duration`: `250ms`, `1.5s`, `3.25s`, `2m` as `120s`)
    /// reads back as the same duration.
    #[test]
    fn fuzz_duration_parses_back_what_is_formatted(millis in 0u64..EXACT_MILLIS) {
        let _loading = loading_blocking();
        let duration = Duration::from_millis(millis);
        let text = traffic::format_duration(duration);
        prop_assert_eq!(parse_duration(&text), Ok(duration), "{}", text);
        prop_assert_eq!(parse_duration(&format!(" {text} ")), Ok(duration));
    }

    /// Whole numbers in every unit, and seconds with up to three decimals, are exact.
    #[test]
    fn fuzz_duration_units_are_exact(
        whole in 0u64..EXACT_MILLIS / 1000,
        fraction in 0u64..1000,
        unit in prop::sample::select(vec![("", 1000u64), ("s", 1000), ("ms", 1), ("m", 60_000), ("h", 3_600_000)]),
    ) {
        let _loading = loading_blocking();
        let (suffix, millis_per_unit) = unit;
        prop_assert_eq!(
            parse_duration(&format!("{whole}{suffix}")),
            Ok(Duration::from_millis(whole * millis_per_unit))
        );
        let expected = Duration::from_millis(whole * 1000 + fraction);
        prop_assert_eq!(parse_duration(&format!("{whole}.{fraction:03}s")), Ok(expected));
        prop_assert_eq!(parse_duration(&format!("{whole}.{fraction:03}")), Ok(expected));
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy's URL joining: `UpstreamUrl::from_str` and `UpstreamUrl::target`.

fn upstream_base() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,8}){0,2}",
        Just("127.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
    ];
    let port = prop::option::of(1u16..=65535);
    let path = "(/[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,8}){0,3}/?";
    (prop::bool::ANY, host, port, path).prop_map(|(https, host, port, path)| {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|port| format!(":{port}")).unwrap_or_default();
        format!("{scheme}://{host}{port}{path}")
    })
}

/// Request targets as clients send them: a path, maybe a query, in any bytes a URI allows.
fn request_target() -> impl Strategy<Value = String> {
    "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,24}(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,24})?"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_upstream_url_parser_never_panics(text in prop_oneof![any::<String>(), upstream_base(), "[a-z:/?#@\\[\\]0-9.%-]{0,30}"]) {
        let _loading = loading_blocking();
        if let Ok(url) = text.parse::<UpstreamUrl>() {
            prop_assert!(url.port() != 0);
            prop_assert!(!url.host().is_empty());
            prop_assert!(!url.host_header().is_empty());
        }
    }

    /// The joined target is the upstream's origin, its path without trailing slashes, then the
    /// request's own path and query byte for byte: nothing dropped, doubled or re-encoded.
    #[test]
    fn fuzz_joined_targets_keep_base_path_and_request_target_intact(
        base in upstream_base(),
        target in request_target(),
    ) {
        let _loading = loading_blocking();
        let url: UpstreamUrl = base.parse().map_err(|error| TestCaseError::fail(format!("{base}: {error}")))?;
        let Ok(incoming) = target.parse::<Uri>() else {
            // Not a request target hyper would have let through.
            return Ok(());
        };
        let joined = url.target(&incoming).expect("a path target always joins");
        let base_uri: Uri = base.parse().unwrap();
        prop_assert_eq!(joined.scheme(), base_uri.scheme());
        prop_assert_eq!(joined.authority(), base_uri.authority());
        let base_path = base_uri.path().trim_end_matches('/');
        let expected = format!("{base_path}{}", incoming.path_and_query().unwrap());
        prop_assert_eq!(joined.path_and_query().unwrap().as_str(), expected.as_str());
        // What is sent upstream parses back to the same target.
        prop_assert_eq!(joined.to_string().parse::<Uri>().unwrap(), joined);

        // Absolute-form targets (as sent to a proxy) contribute only their path and query.
        let absolute: Uri = format!("http://elsewhere.test:81{target}").parse().unwrap();
        prop_assert_eq!(url.target(&absolute).unwrap(), url.target(&incoming).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy's header filtering: `strip_hop_by_hop` and `prepare_request`.

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(HOP_BY_HOP.to_vec()).prop_map(str::to_owned),
        prop::sample::select(vec![
            "x-hop",
            "x-request-id",
            "traceparent",
            "content-length",
            "content-type",
            "host",
            "x-forwarded-for",
            "expect",
            "b3",
        ])
        .prop_map(str::to_owned),
        "[a-z][a-z0-9-]{0,10}",
    ]
}

/// Header values, including comma lists that name other headers and non-ASCII bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,30}".prop_map(String::into_bytes),
        prop::collection::vec(header_name(), 0..4).prop_map(|names| names.join(" ,").into_bytes()),
        prop::collection::vec(prop_oneof![32u8..=126, 128u8..=255, Just(b'\t')], 0..20),
    ]
}

fn header_map() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((header_name(), header_value()), 0..16)
}

fn build(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// The header names a `Connection` header lists, lowercased.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// No hop-by-hop header and no header that `Connection` names survives; every other header
    /// keeps all its values, in order.
    #[test]
    fn fuzz_hop_by_hop_headers_never_pass_and_the_rest_is_intact(pairs in header_map()) {
        let _loading = loading_blocking();
        let original = build(&pairs);
        let named = connection_tokens(&original);
        let mut headers = original.clone();
        strip_hop_by_hop(&mut headers);
        for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
            prop_assert!(!headers.contains_key(name), "{} survived", name);
        }
        for name in original.keys() {
            let removed = HOP_BY_HOP.contains(&name.as_str()) || named.iter().any(|n| n == name.as_str());
            if !removed {
                let before: Vec<_> = original.get_all(name).iter().collect();
                let after: Vec<_> = headers.get_all(name).iter().collect();
                prop_assert_eq!(before, after, "{} changed", name);
            }
        }
    }

    /// The upstream gets exactly one Host (the upstream's), no Expect, and an X-Forwarded-For
    /// ending with the peer after the client's own entries.
    #[test]
    fn fuzz_prepared_requests_carry_one_host_and_the_peer_last(
        pairs in header_map(),
        peer in any::<IpAddr>(),
    ) {
        let _loading = loading_blocking();
        let mut headers = build(&pairs);
        // A client's `Connection: x-forwarded-for` drops its own entries at this hop.
        let dropped = connection_tokens(&headers).iter().any(|name| name == "x-forwarded-for");
        let client_entries: Vec<Vec<u8>> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.as_bytes().trim_ascii().to_vec())
            .filter(|value| !value.is_empty() && !dropped)
            .collect();
        let host = HeaderValue::from_static("hello.external");
        prepare_request(&mut headers, &host, Some(peer), None);
        prop_assert_eq!(headers.get_all("host").iter().collect::<Vec<_>>(), vec![&host]);
        prop_assert!(!headers.contains_key("expect"));
        for name in HOP_BY_HOP {
            prop_assert!(!headers.contains_key(name));
        }
        let forwarded: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
        prop_assert_eq!(forwarded.len(), 1);
        let mut expected = client_entries.join(&b", "[..]);
        if !expected.is_empty() {
            expected.extend_from_slice(b", ");
        }
        expected.extend_from_slice(peer.to_canonical().to_string().as_bytes());
        prop_assert_eq!(forwarded[0].as_bytes(), &expected[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// The caller's body handling: `printable`, `CappedBody` and the summary `Tally`.

proptest! {
    #![proptest_config(config())]

    /// Whatever the bytes, the field is one line without tabs or control characters, at most
    /// six bytes per body byte (the longest escape) plus the marker.
    #[test]
    fn fuzz_printable_fields_stay_one_bounded_line(bytes in prop::collection::vec(any::<u8>(), 0..300), truncated in any::<bool>()) {
        let _loading = loading_blocking();
        let field = printable(&bytes, truncated);
        prop_assert!(!field.chars().any(char::is_control), "{:?}", field);
        prop_assert!(field.len() <= 6 * bytes.len() + TRUNCATED_MARKER.len());
        prop_assert!(!truncated || field.ends_with(TRUNCATED_MARKER));
    }

    /// Plain text passes unchanged but for one trailing newline.
    #[test]
    fn fuzz_plain_text_is_printed_as_is(text in "[^\\p{Cc}]{0,80}", newline in prop::sample::select(vec!["", "\n", "\r\n"])) {
        let _loading = loading_blocking();
        prop_assert_eq!(printable(format!("{text}{newline}").as_bytes(), false), text);
    }

    /// Fed chunk by chunk as the caller reads a body, the cap keeps the longest prefix that
    /// fits on a character boundary, marks a cut, and reports the cut as soon as it happens.
    #[test]
    fn fuzz_the_cap_keeps_a_whole_character_prefix(
        text in "[^\\p{Cc}]{0,60}",
        cuts in prop::collection::vec(0usize..=240, 0..6),
        cap in 1usize..=64,
    ) {
        let _loading = loading_blocking();
        let bytes = text.as_bytes();
        let mut bounds: Vec<usize> = cuts.into_iter().map(|cut| cut.min(bytes.len())).collect();
        bounds.extend([0, bytes.len()]);
        bounds.sort_unstable();
        let mut body = CappedBody::new(cap);
        let mut fed = 0;
        for pair in bounds.windows(2) {
            let chunk = &bytes[pair[0]..pair[1]];
            fed = pair[1];
            if !body.push(chunk) {
                break;
            }
        }
        let truncated = body.is_truncated();
        prop_assert_eq!(truncated, bytes.len() > cap);
        prop_assert!(!truncated || fed > cap, "reported a cut before the cap was passed");
        let field = body.into_field();
        if truncated {
            let kept = (0..=cap).rev().find(|end| text.is_char_boundary(*end)).unwrap();
            prop_assert_eq!(field, format!("{}{TRUNCATED_MARKER}", &text[..kept]));
        } else {
            prop_assert_eq!(field, text);
        }
    }

    /// Summaries lose no call: the counts add up to the total, and distinct labels stay
    /// bounded however many different bodies arrive.
    #[test]
    fn fuzz_summaries_count_every_call(fields in prop::collection::vec(prop_oneof!["[a-c]{1,2}", "[^\\p{Cc}]{1,100}"], 0..200)) {
        let _loading = loading_blocking();
        let mut tally = Tally::default();
        for field in &fields {
            tally.add(field);
        }
        prop_assert_eq!(tally.total(), fields.len() as u64);
        let entries = tally.entries();
        prop_assert_eq!(entries.iter().map(|(_, count)| count).sum::<u64>(), fields.len() as u64);
        prop_assert!(entries.len() <= MAX_DISTINCT + 1);
        prop_assert!(entries.iter().filter(|(label, _)| *label == OTHER_LABEL).count() <= 1);
        prop_assert!(!tally.line("total").contains('\n'));
    }
}
