//! A response body turned into one printable field: capped, decoded lossily, kept on one line.

use std::fmt::Write as _;

/// Appended when the body was longer than the cap.
pub const TRUNCATED_MARKER: &str = " …[truncated]";

/// The first `cap` bytes of a body, collected chunk by chunk so that no more than `cap` bytes
/// are ever held.
#[derive(Debug)]
pub struct CappedBody {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl CappedBody {
    pub fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            truncated: false,
        }
    }

    /// Keeps what fits of `chunk`. Returns false once the cap is exceeded: the caller then
    /// stops reading.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let room = self.cap - self.bytes.len();
        if chunk.len() > room {
            self.bytes.extend_from_slice(&chunk[..room]);
            self.truncated = true;
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The body as one line of text: see [`printable`].
    pub fn into_field(self) -> String {
        printable(&self.bytes, self.truncated)
    }
}

/// Renders body bytes as one tab-free line:
/// - one trailing newline (`\n` or `\r\n`) is dropped, as `$(curl ...)` did;
/// - invalid UTF-8 becomes U+FFFD; a character cut by the cap is dropped rather than mangled;
/// - newlines, tabs and other control characters are written as escapes (`\n`, `\t`,
///   `\u{1b}`), so each call stays one line, the tab stays the only field separator, and a
///   body cannot drive the terminal;
/// - a cut body ends with [`TRUNCATED_MARKER`].
pub fn printable(bytes: &[u8], truncated: bool) -> String {
    let bytes = if truncated {
        without_cut_character(bytes)
    } else {
        without_final_newline(bytes)
    };
    let text = String::from_utf8_lossy(bytes);
    let mut line = String::with_capacity(text.len() + TRUNCATED_MARKER.len());
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    if truncated {
        line.push_str(TRUNCATED_MARKER);
    }
    line
}

fn without_final_newline(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Drops a multi-byte UTF-8 sequence that the cap cut short at the end.
fn without_cut_character(bytes: &[u8]) -> &[u8] {
    let tail_start = bytes.len().saturating_sub(3);
    for start in (tail_start..bytes.len()).rev() {
        let byte = bytes[start];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: look further back for the lead byte
        }
        let needed = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return bytes,
        };
        let complete = bytes.len() - start >= needed;
        return if complete { bytes } else { &bytes[..start] };
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(
            printable(b"Hello K8s, from CF v1 service!\n", false),
            "Hello K8s, from CF v1 service!"
        );
        assert_eq!(printable(b"abort\r\n", false), "abort");
        assert_eq!(printable(b"two\n\n", false), "two\\n");
        assert_eq!(printable(b"none", false), "none");
    }

    #[test]
    fn the_line_stays_one_line() {
        assert_eq!(
            printable(b"<html>\n\t<b>x</b>\r\n</html>\n", false),
            "<html>\\n\\t<b>x</b>\\r\\n</html>"
        );
        assert_eq!(printable(b"\x1b[31mred", false), "\\u{1b}[31mred");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(printable(b"a\xffb", false), "a\u{fffd}b");
    }

    #[test]
    fn the_cap_keeps_at_most_cap_bytes() {
        let mut body = CappedBody::new(5);
        assert!(body.push(b"abc"));
        assert!(body.push(b"de"));
        assert!(!body.is_truncated());
        assert!(!body.push(b"f"));
        assert!(body.is_truncated());
        assert_eq!(body.into_field(), format!("abcde{TRUNCATED_MARKER}"));
    }

    #[test]
    fn a_body_exactly_at_the_cap_is_whole() {
        let mut body = CappedBody::new(6);
        assert!(body.push(b"hello\n"));
        assert_eq!(body.into_field(), "hello");
    }

    #[test]
    fn a_character_cut_by_the_cap_is_dropped() {
        // "é" is two bytes; a cap of 2 keeps "a" and the first half of "é".
        let mut body = CappedBody::new(2);
        assert!(!body.push("aé".as_bytes()));
        assert_eq!(body.into_field(), format!("a{TRUNCATED_MARKER}"));
        // A complete character at the cut stays.
        let mut body = CappedBody::new(3);
        assert!(!body.push("aéb".as_bytes()));
        assert_eq!(body.into_field(), format!("aé{TRUNCATED_MARKER}"));
        // Four-byte characters, cut after one, two and three bytes.
        for keep in 1..4 {
            let mut body = CappedBody::new(keep + 1);
            assert!(!body.push("x🦀y".as_bytes()));
            assert_eq!(body.into_field(), format!("x{TRUNCATED_MARKER}"), "{keep}");
        }
    }
}
