//! Apache's configuration syntax, line by line: physical lines joined where one
//! ends in `\`, comments (a line whose first non-blank character is `#`) and
//! blank lines skipped, and each line split into words as `ap_getword_conf`
//! does (double or single quotes group a word; a backslash escapes the quote
//! inside it).

/// One logical line: where it starts and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based number of the line's first physical line.
    pub line: usize,
    /// The line with its surrounding blanks removed, as written.
    pub text: String,
}

/// The logical lines of `text` that are neither blank nor comments.
pub fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<Line> = None;
    for (index, physical) in text.lines().enumerate() {
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        let (body, continues) = match physical.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (physical, false),
        };
        let line = match pending.take() {
            Some(mut line) => {
                line.text.push_str(body);
                line
            }
            None => Line {
                line: index + 1,
                text: body.to_owned(),
            },
        };
        if continues {
            pending = Some(line);
            continue;
        }
        push(&mut out, line);
    }
    if let Some(line) = pending {
        push(&mut out, line);
    }
    out
}

fn push(out: &mut Vec<Line>, mut line: Line) {
    let trimmed = line.text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return;
    }
    line.text = trimmed.to_owned();
    out.push(line);
}

/// Splits a line into words: runs of non-blank characters, or quoted strings
/// (`"a b"`, `'a b'`) with `\"` (or `\'`) for the quote itself. An unclosed
/// quote runs to the end of the line, as Apache reads it.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&first) {
                    word.push(first);
                    chars.next();
                } else if c == first {
                    break;
                } else {
                    word.push(c);
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        out.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blank_lines_and_continuations() {
        let text =
            "# a comment\n\n  ProxyPass / \\\nhttp://a:1/\r\n\t# indented comment\nServerName x\\";
        let got = lines(text);
        assert_eq!(
            got,
            vec![
                Line {
                    line: 3,
                    text: "ProxyPass / http://a:1/".into()
                },
                Line {
                    line: 6,
                    text: "ServerName x".into()
                },
            ]
        );
    }

    #[test]
    fn a_hash_inside_a_line_is_not_a_comment() {
        assert_eq!(lines("Header set X a#b")[0].text, "Header set X a#b");
    }

    #[test]
    fn quoted_words() {
        assert_eq!(
            words(r#"ProxyPass  "/a b/"  'http://x:1/' "q\"uote" un"quoted""#),
            vec![
                "ProxyPass",
                "/a b/",
                "http://x:1/",
                "q\"uote",
                "un\"quoted\""
            ]
        );
        assert_eq!(words(r#"A "unclosed quote"#), vec!["A", "unclosed quote"]);
        assert_eq!(words(r"A b\c"), vec!["A", r"b\c"]);
        assert!(words("   ").is_empty());
    }
}
