//! Extra request headers, written as for `curl -H`: `Name: value`.

use std::str::FromStr;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Headers that frame the message or the connection: the HTTP client sets them, and a
/// different value would break the request rather than describe it.
const MANAGED_BY_THE_CLIENT: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One line of `--header` / `HEADER`: a header, or a blank line (skipped, so that a multi-line
/// `HEADER` may end with a newline, as YAML block scalars do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderLine {
    Header(HeaderName, HeaderValue),
    Blank,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("not `Name: value` (no colon)")]
    NoColon,
    #[error("'{0}' is not a valid header name")]
    Name(String),
    #[error("the value of {0} is empty")]
    EmptyValue(String),
    #[error("the value of {0} has a character a header may not carry")]
    Value(String),
    #[error("{0} is set by the HTTP client itself")]
    Managed(String),
}

impl FromStr for HeaderLine {
    type Err = HeaderError;

    /// `Name: value`. The name is an HTTP token, with no space before the colon; spaces around
    /// the value are dropped, as HTTP drops them.
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return Ok(HeaderLine::Blank);
        }
        let (name, value) = line.split_once(':').ok_or(HeaderError::NoColon)?;
        let name = HeaderName::from_bytes(name.trim_start().as_bytes())
            .map_err(|_| HeaderError::Name(name.to_owned()))?;
        if MANAGED_BY_THE_CLIENT.contains(&name.as_str()) {
            return Err(HeaderError::Managed(name.to_string()));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() {
            return Err(HeaderError::EmptyValue(name.to_string()));
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| HeaderError::Value(name.to_string()))?;
        Ok(HeaderLine::Header(name, value))
    }
}

/// The headers of `lines`, in order; a name given twice is sent twice.
pub fn header_map(lines: &[HeaderLine]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        if let HeaderLine::Header(name, value) = line {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(line: &str) -> (String, String) {
        match line.parse() {
            Ok(HeaderLine::Header(name, value)) => {
                (name.to_string(), value.to_str().unwrap().to_owned())
            }
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn reads_lines_as_curl_h_does() {
        assert_eq!(header("X-Canary: yes"), ("x-canary".into(), "yes".into()));
        assert_eq!(header("x-user:alice"), ("x-user".into(), "alice".into()));
        assert_eq!(header("X-A:  spaced \t"), ("x-a".into(), "spaced".into()));
        assert_eq!(header("X-A: a: b"), ("x-a".into(), "a: b".into()));
        assert_eq!(header("X-A: b\r"), ("x-a".into(), "b".into()));
        assert_eq!(
            header("Host: hello.external"),
            ("host".into(), "hello.external".into())
        );
        assert_eq!("".parse(), Ok(HeaderLine::Blank));
        assert_eq!("  \r".parse(), Ok(HeaderLine::Blank));
    }

    #[test]
    fn refuses_what_is_not_a_header() {
        let cases = [
            ("X-Canary yes", HeaderError::NoColon),
            (": yes", HeaderError::Name(String::new())),
            ("X Canary: yes", HeaderError::Name("X Canary".into())),
            ("X-Canary : yes", HeaderError::Name("X-Canary ".into())),
            ("X-Canary:", HeaderError::EmptyValue("x-canary".into())),
            ("X-Canary:   ", HeaderError::EmptyValue("x-canary".into())),
            ("X-Canary: a\u{7f}b", HeaderError::Value("x-canary".into())),
            ("X-Canary: a\u{1}b", HeaderError::Value("x-canary".into())),
            (
                "Content-Length: 5",
                HeaderError::Managed("content-length".into()),
            ),
            (
                "Transfer-Encoding: chunked",
                HeaderError::Managed("transfer-encoding".into()),
            ),
            (
                "Connection: close",
                HeaderError::Managed("connection".into()),
            ),
        ];
        for (line, error) in cases {
            assert_eq!(line.parse::<HeaderLine>(), Err(error), "{line:?}");
        }
    }

    #[test]
    fn repeated_names_are_all_sent() {
        let lines: Vec<HeaderLine> = ["X-A: 1", "", "X-A: 2", "X-B: 3"]
            .iter()
            .map(|line| line.parse().unwrap())
            .collect();
        let headers = header_map(&lines);
        let values: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(headers["x-b"], "3");
        assert_eq!(headers.len(), 3);
    }
}
