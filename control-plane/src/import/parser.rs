//! The directives tree of one file: directives and `<Section>`s with their
//! children, each with the file and line it came from. Includes are not
//! followed here (see [`super::include`]), so this is a pure function of the
//! text: the fuzz target's entry point.

use std::sync::Arc;

use switchyard_shared::text::quoted;

use super::lexer;
use super::{ImportError, Location};

/// Sections nested deeper than this are refused (Apache has no such limit, but
/// no real config comes near it, and the tree is walked recursively).
pub const MAX_DEPTH: usize = 64;

/// A directive, or a section (`children` is `Some`) with what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The name as written (`ProxyPass`, `VirtualHost`); compare it case-insensitively.
    pub name: String,
    pub args: Vec<String>,
    pub at: Location,
    pub children: Option<Vec<Node>>,
}

impl Node {
    /// Whether this is the directive or section `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Parses the text of `file` into its directives tree.
pub fn parse(text: &str, file: &Arc<str>) -> Result<Vec<Node>, ImportError> {
    // Open sections: the node and the children read so far.
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut top = Vec::new();
    for line in lexer::lines(text) {
        let at = Location {
            file: Arc::clone(file),
            line: line.line,
        };
        if let Some(rest) = line.text.strip_prefix("</") {
            let name = rest.strip_suffix('>').ok_or_else(|| {
                ImportError::new(
                    &at,
                    format!("{} is missing its closing '>'", quoted(&line.text)),
                )
            })?;
            let name = name.trim();
            let Some((mut open, children)) = stack.pop() else {
                return Err(ImportError::new(
                    &at,
                    format!("</{name}> closes a section that was never opened"),
                ));
            };
            if !open.name.eq_ignore_ascii_case(name) {
                return Err(ImportError::new(
                    &at,
                    format!(
                        "</{name}> does not close <{}> (opened at line {})",
                        open.name, open.at.line
                    ),
                ));
            }
            open.children = Some(children);
            match stack.last_mut() {
                Some((_, siblings)) => siblings.push(open),
                None => top.push(open),
            }
            continue;
        }
        if let Some(rest) = line.text.strip_prefix('<') {
            let inner = rest.strip_suffix('>').ok_or_else(|| {
                ImportError::new(
                    &at,
                    format!("section {} is missing its closing '>'", quoted(&line.text)),
                )
            })?;
            let mut words = lexer::words(inner);
            if words.is_empty() || inner.starts_with(char::is_whitespace) {
                return Err(ImportError::new(
                    &at,
                    "a section without a name ('<' alone)",
                ));
            }
            let name = words.remove(0);
            if stack.len() >= MAX_DEPTH {
                return Err(ImportError::new(
                    &at,
                    format!("sections nested more than {MAX_DEPTH} deep"),
                ));
            }
            let node = Node {
                name,
                args: words,
                at,
                children: None,
            };
            stack.push((node, Vec::new()));
            continue;
        }
        let mut words = lexer::words(&line.text);
        if words.is_empty() {
            continue;
        }
        let name = words.remove(0);
        let node = Node {
            name,
            args: words,
            at,
            children: None,
        };
        match stack.last_mut() {
            Some((_, siblings)) => siblings.push(node),
            None => top.push(node),
        }
    }
    if let Some((open, _)) = stack.pop() {
        return Err(ImportError::new(
            &open.at,
            format!("<{}> is never closed (no </{}>)", open.name, open.name),
        ));
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<str> {
        Arc::from("site.conf")
    }

    #[test]
    fn sections_nest_and_keep_their_lines() {
        let text = "Listen 80\n<VirtualHost *:80>\n  <Location /app>\n    ProxyPass http://a:1/\n  </Location>\n</virtualhost>\n";
        let nodes = parse(text, &file()).unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].is("listen"));
        assert_eq!(nodes[0].args, vec!["80"]);
        let vhost = &nodes[1];
        assert!(vhost.is("VirtualHost"));
        assert_eq!(vhost.args, vec!["*:80"]);
        assert_eq!(vhost.at.line, 2);
        let location = &vhost.children.as_ref().unwrap()[0];
        assert_eq!(location.args, vec!["/app"]);
        let pass = &location.children.as_ref().unwrap()[0];
        assert_eq!(pass.at.line, 4);
        assert_eq!(pass.args, vec!["http://a:1/"]);
        assert!(pass.children.is_none());
    }

    #[test]
    fn quoted_section_arguments() {
        let nodes = parse("<Proxy \"balancer://c\">\n</Proxy>", &file()).unwrap();
        assert_eq!(nodes[0].args, vec!["balancer://c"]);
        assert_eq!(nodes[0].children, Some(vec![]));
    }

    #[test]
    fn unclosed_and_mismatched_sections_are_refused_with_their_line() {
        let err = parse("<VirtualHost *:80>\nProxyPass / http://a:1/\n", &file()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "site.conf:1: <VirtualHost> is never closed (no </VirtualHost>)"
        );
        let err = parse("<VirtualHost *:80>\n</Location>\n", &file()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("site.conf:2: </Location> does not close <VirtualHost>"),
            "{err}"
        );
        let err = parse("</Proxy>\n", &file()).unwrap_err();
        assert!(err.to_string().contains("never opened"), "{err}");
        let err = parse("<VirtualHost *:80\n", &file()).unwrap_err();
        assert!(err.to_string().contains("missing its closing '>'"), "{err}");
        let err = parse("<>\n", &file()).unwrap_err();
        assert!(err.to_string().contains("without a name"), "{err}");
    }

    #[test]
    fn nesting_is_bounded() {
        let text = "<A>\n".repeat(MAX_DEPTH + 1);
        let err = parse(&text, &file()).unwrap_err();
        assert!(err.to_string().contains("nested more than"), "{err}");
    }
}
