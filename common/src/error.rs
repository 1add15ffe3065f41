//! Error chains turned into the short text the programs print: the proxy's 502 bodies and the
//! caller's `error: ...` fields.

use std::error::Error;
use std::io;

/// `error` and its causes, outermost first.
///
/// An `io::Error` that wraps another error shows that error's text as its own but skips it in
/// `source()`; the chain goes through the wrapped error instead, so a TLS failure nested in
/// io::Errors is found.
pub fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&error| match wrapped_by_io(error) {
        Some(wrapped) => Some(wrapped),
        None => error.source(),
    })
}

/// The first error of type `E` in `error`'s chain, `error` included.
pub fn find<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    chain(error).find_map(|error| error.downcast_ref::<E>())
}

/// The error an `io::Error` wraps, when it wraps one.
fn wrapped_by_io<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    let wrapped = error.downcast_ref::<io::Error>()?.get_ref()?;
    Some(wrapped)
}

/// A short, lower-case reason for the socket errors a caller meets; None for the rest.
pub fn io_reason(kind: io::ErrorKind) -> Option<&'static str> {
    Some(match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::TimedOut => "timed out",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => "connection closed",
        _ => return None,
    })
}

/// Why `error` happened, in a few words: the short reason of the first socket error in its
/// chain, else the text of its innermost cause (`tcp connect error: Connection refused (os
/// error 111)` becomes `connection refused`).
pub fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut innermost = error;
    for cause in chain(error) {
        if let Some(reason) = cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io_reason(io.kind()))
        {
            return reason.to_owned();
        }
        innermost = cause;
    }
    innermost.to_string()
}

/// `error` and its causes joined with ": ", each text once (an io::Error shows the text of the
/// error it wraps, so that one is not repeated).
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    for cause in chain(error) {
        if wrapped_by_io(cause).is_some() {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer step failed")]
    struct Outer(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("invalid peer certificate: UnknownIssuer")]
    struct Certificate;

    #[test]
    fn the_chain_goes_through_errors_wrapped_in_io_errors() {
        let nested = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, Certificate));
        let error = Outer(nested);
        assert!(find::<Certificate>(&error).is_some());
        assert_eq!(chain(&error).count(), 4);
        assert_eq!(
            describe(&error),
            "outer step failed: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn root_cause_prefers_the_socket_reason() {
        let refused = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(root_cause(&refused), "connection refused");
        let other = Outer(io::Error::other("failed to lookup address information"));
        assert_eq!(root_cause(&other), "failed to lookup address information");
        assert_eq!(
            root_cause(&Certificate),
            "invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn io_reasons_are_short() {
        assert_eq!(
            io_reason(io::ErrorKind::UnexpectedEof),
            Some("connection closed")
        );
        assert_eq!(io_reason(io::ErrorKind::InvalidData), None);
    }
}
