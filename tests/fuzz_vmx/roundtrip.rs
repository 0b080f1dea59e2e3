//! Well-formed `.vmx` files written from known settings, for the
//! round-trip property: parsing gives back exactly the keys, values and
//! line numbers they were written from.
//!
//! Invariant: every file rendered here is well-formed by docs/config.md:
//! keys without whitespace, `"`, `#`, `=` or control characters; quoted
//! values with `"`, `|`, CR and LF escaped as `|XX` (other characters
//! escaped at random); bare values only where the syntax allows them. The
//! exceptions, which the parser must refuse naming their line: a
//! [`WellFormedLine::BadEscape`] line, and a value holding a NUL (no value
//! may, docs/config.md).

use super::strategy::BOM;
use monitor::config::KNOWN_KEYS;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// One line of a well-formed file.
#[derive(Clone, Debug)]
pub enum WellFormedLine {
    /// A setting.
    Setting {
        /// The key.
        key: WellFormedKey,
        /// The value it must parse to.
        value: String,
        /// Write the value without quotes when the syntax allows it.
        bare: bool,
        /// Which characters to escape although they need not be.
        escapes: u64,
        /// Spaces around `=` and a trailing comment.
        spaced: bool,
    },
    /// A quoted value with an escape that is not `|` and two hex digits,
    /// which makes the file malformed.
    BadEscape {
        /// The key.
        key: WellFormedKey,
        /// Text before the escape.
        before: String,
        /// The malformed escape.
        escape: &'static str,
    },
    /// A comment.
    Comment(String),
    /// An empty line.
    Blank,
}

/// A key that is valid by the syntax.
#[derive(Clone, Debug)]
pub enum WellFormedKey {
    /// A recognized key.
    Known(Index),
    /// Any other valid key.
    Other(String),
}

/// A well-formed file.
#[derive(Clone, Debug)]
pub struct WellFormed {
    /// Starts with a byte order mark.
    pub bom: bool,
    /// Lines end with CR LF.
    pub crlf: bool,
    /// The lines.
    pub lines: Vec<WellFormedLine>,
}

/// A rendered well-formed file and what it must parse to.
pub struct Rendered {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// `(key, value, line)` of each setting, in order.
    pub entries: Vec<(String, String, usize)>,
    /// `(key, value, quoted form)` of each setting, for `--set`.
    pub settings: Vec<(String, String, String)>,
    /// The first malformed line (a bad escape, a NUL), which the parser must name.
    pub malformed: Option<usize>,
}

/// Escapes that are not `|` followed by two hex digits.
const BAD_ESCAPES: &[&str] = &[
    "|+1", "|+f", "|-1", "|zz", "|2", "|", "| 1", "|0x", "|1\u{e9}", "|\u{e9}",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,20}",
        2 => vec(any::<char>(), 0..20).prop_map(|c| c.into_iter().collect()),
        1 => vec(select(&['"', '|', '#', '=', ' ', '\t', '\r', '\n', '\0', '\u{feff}', 'x'][..]), 0..12)
            .prop_map(|c| c.into_iter().collect()),
    ]
}

fn key() -> impl Strategy<Value = WellFormedKey> {
    prop_oneof![
        2 => any::<Index>().prop_map(WellFormedKey::Known),
        1 => "[A-Za-z0-9_.:\\-\u{e9}\u{4e2d}]{1,16}".prop_map(WellFormedKey::Other),
    ]
}

fn line() -> impl Strategy<Value = WellFormedLine> {
    prop_oneof![
        6 => (key(), value(), any::<bool>(), any::<u64>(), any::<bool>()).prop_map(
            |(key, value, bare, escapes, spaced)| WellFormedLine::Setting {
                key,
                value,
                bare,
                escapes,
                spaced,
            }
        ),
        1 => (key(), "[a-z ]{0,6}", select(BAD_ESCAPES)).prop_map(|(key, before, escape)| {
            WellFormedLine::BadEscape { key, before, escape }
        }),
        1 => "[^\r\n]{0,20}".prop_map(WellFormedLine::Comment),
        1 => Just(WellFormedLine::Blank),
    ]
}

/// Generated well-formed files.
pub fn well_formed() -> impl Strategy<Value = WellFormed> {
    (
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        vec(line(), 0..10),
    )
        .prop_map(|(bom, crlf, lines)| WellFormed { bom, crlf, lines })
}

impl WellFormed {
    /// The file and what it must parse to.
    pub fn render(&self) -> Rendered {
        let ending = if self.crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        let mut entries = Vec::new();
        let mut settings = Vec::new();
        let mut malformed = None;
        for (index, line) in self.lines.iter().enumerate() {
            match line {
                WellFormedLine::Setting {
                    key,
                    value,
                    bare,
                    escapes,
                    spaced,
                } => {
                    let key = key.spelling();
                    let quoted = quote(value, *escapes);
                    let written = if *bare && bare_allowed(value) {
                        value.clone()
                    } else {
                        quoted.clone()
                    };
                    text.push_str(&if *spaced {
                        format!("{key} = {written} # comment")
                    } else {
                        format!("{key}={written}")
                    });
                    if value.contains('\0') {
                        malformed.get_or_insert(index + 1);
                    }
                    entries.push((key.to_string(), value.clone(), index + 1));
                    settings.push((key.to_string(), value.clone(), quoted));
                }
                WellFormedLine::BadEscape {
                    key,
                    before,
                    escape,
                } => {
                    text.push_str(&format!("{} = \"{before}{escape}\"", key.spelling()));
                    malformed.get_or_insert(index + 1);
                }
                WellFormedLine::Comment(comment) => text.push_str(&format!("#{comment}")),
                WellFormedLine::Blank => {}
            }
            text.push_str(ending);
        }
        let mut bytes = if self.bom { BOM.to_vec() } else { Vec::new() };
        bytes.extend_from_slice(text.as_bytes());
        Rendered {
            bytes,
            entries,
            settings,
            malformed,
        }
    }
}

impl WellFormedKey {
    fn spelling(&self) -> &str {
        match self {
            WellFormedKey::Known(which) => KNOWN_KEYS[which.index(KNOWN_KEYS.len())],
            WellFormedKey::Other(key) => key,
        }
    }
}

/// A bare value runs to a `#` or the end of the line and is trimmed.
fn bare_allowed(value: &str) -> bool {
    !value.contains(['#', '\n', '\r', '"']) && value.trim() == value
}

/// `"value"` with the characters the syntax needs escaped as `|XX`, and
/// those with a 1 bit in `escapes` (by position) escaped too.
fn quote(value: &str, escapes: u64) -> String {
    let mut quoted = String::from("\"");
    for (index, c) in value.chars().enumerate() {
        let optional = escapes >> (index % 64) & 1 == 1;
        if matches!(c, '"' | '|' | '\n' | '\r') || optional {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                let hex = if optional {
                    format!("|{byte:02x}")
                } else {
                    format!("|{byte:02X}")
                };
                quoted.push_str(&hex);
            }
        } else {
            quoted.push(c);
        }
    }
    quoted.push('"');
    quoted
}
