//! The `.vmx` file syntax: `key = "value"` lines.
//!
//! Accepted per line: blank lines; `#` comments (whole-line, or after a
//! value); `key = "value"` with an optional trailing comment; and
//! `key = value` with an unquoted value (running to a `#` or the end of the
//! line, trimmed). Inside quotes, VMware's `|XX` escape stands for the byte
//! with hex code `XX` (so `|22` is `"` and `|7C` is `|`).
//!
//! Invariant: every [`Entry`] produced carries the file and 1-based line it
//! came from; every malformed line is an error naming both.

use super::{ConfigError, Entry, Origin};
use std::path::Path;

/// Splits `text` (the contents of `path`) into entries, in file order.
pub fn parse_vmx(path: &Path, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let syntax_error = |reason: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: line_number,
            reason,
        };
        if let Some((key, value)) = parse_line(line).map_err(syntax_error)? {
            entries.push(Entry {
                key,
                value,
                origin: Origin::File {
                    path: path.to_path_buf(),
                    line: line_number,
                },
            });
        }
    }
    Ok(entries)
}

/// Parses one line; `None` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let Some((raw_key, raw_value)) = trimmed.split_once('=') else {
        return Err(format!("expected key = \"value\", found \"{trimmed}\""));
    };
    let key = parse_key(raw_key)?;
    let value = parse_value(raw_value.trim())?;
    Ok(Some((key, value)))
}

/// Checks a key: non-empty, no whitespace, quotes or comment characters.
pub(crate) fn parse_key(raw_key: &str) -> Result<String, String> {
    let key = raw_key.trim();
    if key.is_empty() {
        return Err("missing key before '='".to_string());
    }
    if let Some(bad) = key
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '"' | '#' | '=') || c.is_control())
    {
        return Err(format!("invalid character {bad:?} in key \"{key}\""));
    }
    Ok(key.to_string())
}

/// Parses the text after `=` (already trimmed): quoted or bare.
pub(crate) fn parse_value(text: &str) -> Result<String, String> {
    match text.strip_prefix('"') {
        Some(quoted) => parse_quoted(quoted),
        None => Ok(strip_comment(text).trim_end().to_string()),
    }
}

fn strip_comment(text: &str) -> &str {
    text.split_once('#').map_or(text, |(value, _)| value)
}

/// Parses the rest of a quoted value (after the opening quote).
fn parse_quoted(rest: &str) -> Result<String, String> {
    let Some(end) = rest.find('"') else {
        return Err("unterminated quoted value (missing closing '\"')".to_string());
    };
    let trailing = rest[end + 1..].trim_start();
    if !trailing.is_empty() && !trailing.starts_with('#') {
        return Err(format!(
            "unexpected text after the closing quote: \"{trailing}\""
        ));
    }
    decode_escapes(&rest[..end])
}

/// Decodes VMware's `|XX` escapes.
fn decode_escapes(text: &str) -> Result<String, String> {
    if !text.contains('|') {
        return Ok(text.to_string());
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'|' {
            let hex = tail
                .get(..2)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or_else(|| {
                    "'|' must be followed by two hex digits (e.g. |22 for '\"')".to_string()
                })?;
            bytes.push(hex);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map_err(|_| "escapes decode to invalid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
        parse_vmx(Path::new("t.vmx"), text)
            .map(|entries| entries.into_iter().map(|e| (e.key, e.value)).collect())
    }

    fn syntax_line(text: &str) -> usize {
        match parse(text) {
            Err(ConfigError::Syntax { line, .. }) => line,
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn quoted_values_comments_and_blank_lines() {
        let text = "# header\n\n  memsize = \"256\"  # trailing\ndisplayName=\"a # b\"\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                ("memsize".to_string(), "256".to_string()),
                ("displayName".to_string(), "a # b".to_string())
            ]
        );
    }

    #[test]
    fn unquoted_value_runs_to_comment() {
        assert_eq!(
            parse("memsize = 64 # MiB").unwrap(),
            vec![("memsize".to_string(), "64".to_string())]
        );
    }

    #[test]
    fn empty_quoted_value_is_allowed() {
        assert_eq!(
            parse("nestmon.append = \"\"").unwrap(),
            vec![("nestmon.append".to_string(), String::new())]
        );
    }

    #[test]
    fn pipe_escapes_decode_to_bytes() {
        assert_eq!(
            parse("displayName = \"say |22hi|22 |7C x\"").unwrap()[0].1,
            "say \"hi\" | x"
        );
    }

    #[test]
    fn malformed_lines_report_their_line_number() {
        assert_eq!(syntax_line("a = \"1\"\nno equals sign\n"), 2);
        assert_eq!(syntax_line("\n\n = \"1\"\n"), 3);
        assert_eq!(syntax_line("a = \"open\n"), 1);
        assert_eq!(syntax_line("a = \"1\" junk\n"), 1);
        assert_eq!(syntax_line("two words = \"1\"\n"), 1);
        assert_eq!(syntax_line("a = \"bad |zz escape\"\n"), 1);
    }

    #[test]
    fn syntax_error_message_names_file_and_line() {
        let error = parse_vmx(Path::new("dir/x.vmx"), "ok = \"1\"\nbroken\n").unwrap_err();
        assert!(error.to_string().starts_with("dir/x.vmx:2: "), "{error}");
    }

    #[test]
    fn entries_remember_their_line() {
        let entries = parse_vmx(Path::new("t.vmx"), "\na = \"1\"\n").unwrap();
        assert_eq!(
            entries[0].origin,
            Origin::File {
                path: "t.vmx".into(),
                line: 2
            }
        );
    }
}
