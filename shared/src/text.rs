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

/// `message` if it has at most [`MESSAGE_MAX_CHARS`] characters; else its
/// beginning and its end with `…` between (the end of serde's messages says
/// what was expected and where).
pub fn bounded(message: String) -> String {
    let tail_chars = MESSAGE_MAX_CHARS / 4;
    let head_chars = MESSAGE_MAX_CHARS - tail_chars;
    let (head, cut) = prefix(&message, head_chars);
    if !cut {
        return message;
    }
    let rest = message.get(head.len()..).unwrap_or_default();
    let rest_chars = rest.chars().count();
    if rest_chars <= tail_chars {
        return message;
    }
    let tail_start = rest
        .char_indices()
        .nth(rest_chars - tail_chars)
        .map_or(rest.len(), |(i, _)| i);
    format!("{head}…{}", rest.get(tail_start..).unwrap_or_default())
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
        let exact = "z".repeat(MESSAGE_MAX_CHARS);
        assert_eq!(bounded(exact.clone()), exact);
        let cut = bounded(format!("start {} end", "y".repeat(5000)));
        assert_eq!(cut.chars().count(), MESSAGE_MAX_CHARS + 1);
        assert!(cut.starts_with("start y"), "{cut}");
        assert!(cut.ends_with("yy end"), "{cut}");
        assert!(cut.contains('…'));
    }
}
