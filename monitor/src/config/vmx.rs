//! The `.vmx` file syntax: `key = "value"` lines.
//!
//! Accepted per line: blank lines; `#` comments (whole-line, or after a
//! value); `key = "value"` with an optional trailing comment; and
//! `key = value` with an unquoted value (running to a `#` or the end of the
//! line, trimmed). Inside quotes, VMware's `|XX` escape stands for the byte
//! with hex code `XX` (so `|22` is `"` and `|7C` is `|`).
//!
//! A UTF-8 byte order mark at the start of the file (as Windows editors
//! write it) is skipped.
//!
//! Invariants: every [`Entry`] produced carries the file and 1-based line it
//! came from; every malformed line is an error naming both. No value holds
//! a NUL byte (nothing downstream can carry one: paths, the kernel command
//! line and guestinfo are C strings), and text echoed in an error has its
//! control characters escaped ([`visible`]), so a NUL shows as `\0`
//! instead of vanishing on the terminal.

use super::{ConfigError, Entry, Origin};
use std::path::Path;

/// The UTF-8 byte order mark.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// Splits `text` (the contents of `path`) into entries, in file order.
pub fn parse_vmx(path: &Path, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let text = text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text);
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
        return Err(format!(
            "expected key = \"value\", found \"{}\"",
            visible(trimmed)
        ));
    };
    let key = parse_key(raw_key)?;
    let value = parse_value(raw_value.trim())?;
    refuse_nul(&key, &value)?;
    Ok(Some((key, value)))
}

/// Refuses a value holding a NUL byte (written as is or as `|00`), showing
/// where it is.
pub(crate) fn refuse_nul(key: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!(
            "the value of {key} contains a NUL byte (shown as \\0): \"{}\"",
            visible(value)
        ));
    }
    Ok(())
}

/// `text` with the characters a terminal would not show escaped as Rust
/// writes them: control characters (`\0`, `\t`, `\u{1b}`) and invisible
/// ones such as a byte order mark (`\u{feff}`). Quotes, backslashes and
/// printable letters of any script are left as they are.
pub fn visible(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for piece in text.split_inclusive(is_kept_verbatim) {
        let (body, kept) = match piece.strip_suffix(is_kept_verbatim) {
            Some(body) => (body, &piece[body.len()..]),
            None => (piece, ""),
        };
        shown.extend(body.escape_debug());
        shown.push_str(kept);
    }
    shown
}

/// Whether a terminal shows `c` as itself (see [`visible`]).
fn is_visible(c: char) -> bool {
    is_kept_verbatim(c) || c.escape_debug().eq([c])
}

/// Characters `str::escape_debug` would escape although a terminal shows them.
fn is_kept_verbatim(c: char) -> bool {
    matches!(c, '"' | '\'' | '\\')
}

/// Checks a key: non-empty, no whitespace, quotes or comment characters.
pub(crate) fn parse_key(raw_key: &str) -> Result<String, String> {
    let key = raw_key.trim();
    if key.is_empty() {
        return Err("missing key before '='".to_string());
    }
    if let Some(bad) = key
        .chars()
        .find(|&c| c.is_whitespace() || matches!(c, '"' | '#' | '=') || !is_visible(c))
    {
        return Err(format!(
            "invalid character {bad:?} in key \"{}\"",
            visible(key)
        ));
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
            "unexpected text after the closing quote: \"{}\"",
            visible(trailing)
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
            let hex = tail.get(..2).and_then(hex_byte).ok_or_else(|| {
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

/// The byte two ASCII hex digits stand for. (`u8::from_str_radix` alone
/// would also take a sign, reading `+1` as 1.)
fn hex_byte(digits: &[u8]) -> Option<u8> {
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
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
    fn escape_needs_two_hex_digits_not_a_sign() {
        assert_eq!(syntax_line("a = \"|+1\"\n"), 1);
        assert_eq!(syntax_line("a = \"ok\"\nb = \"x|+fy\"\n"), 2);
        assert_eq!(syntax_line("a = \"|-1\"\n"), 1);
        assert_eq!(parse("a = \"|0a|0A|7c|7C\"").unwrap()[0].1, "\n\n||");
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
    fn byte_order_mark_before_the_first_key_is_skipped() {
        assert_eq!(
            parse("\u{feff}memsize = \"64\"\nguestOS = \"other\"\n").unwrap(),
            vec![
                ("memsize".to_string(), "64".to_string()),
                ("guestOS".to_string(), "other".to_string())
            ]
        );
    }

    #[test]
    fn byte_order_mark_before_a_comment_or_nothing_is_skipped() {
        let with_mark = "\u{feff}# written on Windows\r\nmemsize = \"64\"\r\n";
        assert_eq!(
            parse(with_mark).unwrap(),
            vec![("memsize".to_string(), "64".to_string())]
        );
        assert!(parse("\u{feff}").unwrap().is_empty());
    }

    #[test]
    fn byte_order_mark_keeps_line_numbers() {
        assert_eq!(syntax_line("\u{feff}a = \"1\"\nbroken\n"), 2);
    }

    #[test]
    fn byte_order_mark_elsewhere_is_an_invalid_key_character_shown_escaped() {
        let error = parse_vmx(Path::new("vm.vmx"), "a = \"1\"\n\u{feff}b = \"2\"\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "vm.vmx:2: invalid character '\\u{feff}' in key \"\\u{feff}b\""
        );
    }

    #[test]
    fn nul_byte_in_a_value_is_refused_and_shown_escaped() {
        let error =
            parse_vmx(Path::new("vm.vmx"), "a = \"1\"\ndisplayName = \"ab\0cd\"\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "vm.vmx:2: the value of displayName contains a NUL byte (shown as \\0): \"ab\\0cd\""
        );
    }

    #[test]
    fn nul_byte_from_an_escape_is_refused_too() {
        let error = parse_vmx(Path::new("vm.vmx"), "displayName = \"ab|00cd\"\n").unwrap_err();
        assert!(error.to_string().ends_with("\"ab\\0cd\""), "{error}");
    }

    #[test]
    fn nul_byte_in_an_unquoted_value_is_refused() {
        assert_eq!(syntax_line("\nmemsize = 6\x004\n"), 2);
    }

    #[test]
    fn echoed_line_shows_control_characters_escaped() {
        let error = parse_vmx(Path::new("vm.vmx"), "no\0equals\u{1b}[2J\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "vm.vmx:1: expected key = \"value\", found \"no\\0equals\\u{1b}[2J\""
        );
    }

    #[test]
    fn visible_leaves_printable_text_alone() {
        assert_eq!(visible("Grüße \"x\" |22"), "Grüße \"x\" |22");
        assert_eq!(visible("a\tb\r"), "a\\tb\\r");
        assert_eq!(visible("x\u{200b}y\u{feff}"), "x\\u{200b}y\\u{feff}");
        assert_eq!(visible("C:\\vm's \"dir\""), "C:\\vm's \"dir\"");
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
