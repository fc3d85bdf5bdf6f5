//! User input quoted in messages, at most a bounded prefix of it: an error
//! about a 10 MB name is a short error, not a 10 MB one.

use std::fmt;

/// The most characters of user input a message quotes.
pub const QUOTE_MAX_CHARS: usize = 64;
/// The longest message an error carries (serde's own messages quote field
/// names and variants whole; this cuts them).
pub const MESSAGE_MAX_CHARS: usize = 1024;

/// `text` quoted and escaped like `{:?}`, cut after [`QUOTE_MAX_CHARS`]
/// characters with `…` (and its length in bytes) when longer.
pub fn quoted(text: &str) -> Quoted<'_> {
    Quoted(text)
}

/// See [`quoted`].
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, cut) = prefix(self.0, QUOTE_MAX_CHARS);
        write!(f, "\"{}", prefix.escape_debug())?;
        if cut {
            write!(f, "…\" ({} bytes)", self.0.len())
        } else {
            f.write_str("\"")
        }
    }
}

/// `message`, cut after [`MESSAGE_MAX_CHARS`] characters with `…`.
pub fn bounded(mut message: String) -> String {
    let (prefix, cut) = prefix(&message, MESSAGE_MAX_CHARS);
    if cut {
        let len = prefix.len();
        message.truncate(len);
        message.push('…');
    }
    message
}

/// The first `max` characters of `text`, and whether anything was cut.
fn prefix(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((end, _)) => (text.get(..end).unwrap_or(text), true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_like_debug() {
        assert_eq!(quoted("a b").to_string(), "\"a b\"");
        assert_eq!(quoted("a\"b\n").to_string(), format!("{:?}", "a\"b\n"));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(10_000);
        let text = quoted(&long).to_string();
        assert!(
            text.starts_with(&format!("\"{}…\"", "é".repeat(QUOTE_MAX_CHARS))),
            "{text}"
        );
        assert!(text.ends_with("(20000 bytes)"), "{text}");
        assert_eq!(quoted(&"x".repeat(64)).to_string().len(), 66);
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(bounded("short".to_owned()), "short");
        let cut = bounded("y".repeat(5000));
        assert_eq!(cut.chars().count(), MESSAGE_MAX_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
