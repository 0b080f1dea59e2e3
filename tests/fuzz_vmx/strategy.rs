//! proptest strategies for the `.vmx` fuzz target: files built line by
//! line from the real key set (`monitor::config::KNOWN_KEYS`), values
//! shaped for each key, odd quoting and escapes, control bytes, invalid
//! UTF-8, a byte order mark, several line endings, and lines of the
//! existing `.vmx` corpora.
//!
//! Invariant: rendering a [`VmxCase`] is deterministic, so the saved bytes
//! of a failing case reproduce it.

use monitor::config::{KNOWN_KEYS, KNOWN_KEY_PREFIXES};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The UTF-8 byte order mark.
pub const BOM: &[u8] = b"\xef\xbb\xbf";

/// How a key is spelled.
#[derive(Clone, Debug)]
pub enum Key {
    /// A recognized key, its ASCII letters' case flipped where `case` has a 1 bit.
    Known(Index, u64),
    /// `guestinfo.<name>`.
    Guestinfo(String),
    /// `cpuid.<leaf>.<register>[.<vendor>]`.
    Cpuid(String, String, Option<String>),
    /// The key of an earlier setting of the file (a duplicate), case flipped.
    Repeat(Index, u64),
    /// Anything at all, including what a key may not contain.
    Odd(String),
}

/// One piece of a value.
#[derive(Clone, Debug)]
pub enum Piece {
    /// A value of the kind the key takes (a memsize for `memsize`, a mask
    /// for `cpuid.*`, ...), chosen by `pick` (the mask for cpuid keys).
    ForKey(Index, String),
    /// Any text.
    Text(String),
    /// A `|XX` escape, well-formed or not.
    Escape(&'static str),
    /// Raw bytes, usually not UTF-8.
    Bytes(Vec<u8>),
    /// A control or otherwise invisible character.
    Control(&'static str),
    /// A long run of one character.
    Long(char, usize),
}

/// How the value is written after `=`.
#[derive(Clone, Debug)]
pub enum Form {
    /// `"…"`, possibly unterminated, possibly followed by text.
    Quoted {
        /// Whether the closing quote is written.
        closed: bool,
        /// Text after the closing quote.
        trailing: &'static str,
    },
    /// Without quotes.
    Bare,
}

/// One line of a generated file.
#[derive(Clone, Debug)]
pub enum Line {
    /// `key = value`.
    Setting {
        /// Leading whitespace.
        indent: &'static str,
        /// The key.
        key: Key,
        /// What separates key and value (usually with an `=`).
        separator: &'static str,
        /// The value's pieces.
        value: Vec<Piece>,
        /// Its form.
        form: Form,
        /// A trailing comment.
        comment: Option<String>,
    },
    /// `# …`.
    Comment(String),
    /// Whitespace only.
    Blank(&'static str),
    /// A line of an existing `.vmx` file.
    Seed(Index, Index),
    /// Arbitrary bytes.
    Raw(Vec<u8>),
}

/// How lines are separated.
#[derive(Clone, Copy, Debug)]
pub enum Ending {
    /// `\n`.
    Lf,
    /// `\r\n`.
    CrLf,
    /// `\r` alone (old Mac OS).
    Cr,
    /// Line by line at random.
    Mixed(u64),
}

/// A generated `.vmx` file.
#[derive(Clone, Debug)]
pub struct VmxCase {
    /// Starts with a UTF-8 byte order mark.
    pub bom: bool,
    /// The lines.
    pub lines: Vec<Line>,
    /// Line endings.
    pub ending: Ending,
    /// The last line is terminated too.
    pub final_newline: bool,
}

const MEMSIZES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "8",
    "128",
    "3072",
    "3073",
    "3076",
    "4096",
    "-4",
    "-0",
    "+8",
    "0x10",
    "0X10",
    "010",
    " 8 ",
    "1e3",
    "4.0",
    "4_0",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999",
    "",
    "\u{0668}",
    "\u{ff18}",
];
const BOOLEANS: &[&str] = &[
    "TRUE",
    "FALSE",
    "true",
    "false",
    "yes",
    "no",
    "y",
    "n",
    "on",
    "off",
    "1",
    "0",
    "2",
    "",
    "maybe",
    " TRUE ",
    "tRuE",
    "T",
    "F",
    "yes please",
];
const MODES: &[&str] = &[
    "automatic",
    "software",
    "hardware",
    "Hardware",
    "HARDWARE",
    "auto",
    "",
    " software ",
    "hardware ",
];
const SERIAL_TYPES: &[&str] = &[
    "stdio",
    "file",
    "pipe",
    "device",
    "network",
    "thinprint",
    "FILE",
    "Pipe ",
    "",
];
const PATHS: &[&str] = &[
    "guest.elf",
    "./guest.elf",
    "missing.elf",
    "/dev/null",
    "",
    "/",
    "..",
    ".",
    "a/../guest.elf",
    "com1.log",
    "/nonexistent/dir/x",
    "guest.elf/",
];
const GUEST_OSES: &[&str] = &[
    "other",
    "ubuntu-64",
    "winXPPro",
    "otherlinux-64",
    "-64",
    "",
    "OTHER-64",
];
const ENCODINGS: &[&str] = &[
    "UTF-8",
    "utf8",
    "Utf-8",
    "windows-1252",
    "Shift_JIS",
    "",
    "utf--8",
];
const TEXTS: &[&str] = &[
    "",
    "x",
    "My VM",
    "a # b",
    "say \"hi\"",
    "|",
    "=",
    "==",
    "\\",
    "'quoted'",
];
const ESCAPES: &[&str] = &[
    "|22", "|7C", "|7c", "|23", "|3D", "|00", "|0A", "|0D", "|1B", "|7F", "|FF", "|C3|A9",
    "|E2|80", "|zz", "|2", "|", "|+1", "|-1", "| 1", "||", "|0x", "|\u{e9}",
];
const GOOD_ESCAPES: &[&str] = &["|22", "|7C", "|7c", "|23", "|3D", "|0A", "|1B", "|C3|A9"];
const CONTROLS: &[&str] = &[
    "\0", "\x01", "\x08", "\t", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\u{85}", "\u{2028}",
    "\u{feff}", "\u{202e}", "\u{a0}", "\r",
];
const INVALID_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",
    b"\x80",
];
const CPUID_LEAVES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "d",
    "80000000",
    "80000001",
    "80000004",
    "80000008",
    "40000000",
    "40000010",
    "0x1",
    "0X80000001",
    "00000001",
    "000000001",
    "100000000",
    "",
    "-1",
    "+1",
    "g",
];
const CPUID_REGISTERS: &[&str] = &[
    "eax", "ebx", "ecx", "edx", "EDX", "Ecx", "esp", "", "eax.amd",
];
const CPUID_VENDORS: &[&str] = &["amd", "intel", "AMD", "Intel", "via", ""];
const MASK_CHARACTERS: &[char] = &[
    '-', '-', '-', '0', '1', 'H', 'h', 'R', 'r', ':', 'x', 'X', '2', ' ', '\t', '\u{0660}', '\0',
];
const INDENTS: &[&str] = &["", "", "", " ", "\t", "  \t "];
const SEPARATORS: &[&str] = &[
    "=", " = ", " = ", " =", "= ", "\t=\t", " == ", "  =  ", " ", "",
];
const TRAILERS: &[&str] = &["", "", " # c", "#", " junk", "\"", " \"x\""];
const BLANKS: &[&str] = &["", " ", "\t", " \t ", "\u{a0}", "\u{3000}"];

fn key() -> impl Strategy<Value = Key> {
    let word = "[A-Za-z0-9_.:-]{1,12}";
    prop_oneof![
        6 => (any::<Index>(), case_flips()).prop_map(|(which, case)| Key::Known(which, case)),
        2 => word.prop_map(Key::Guestinfo),
        3 => (
            select(CPUID_LEAVES),
            select(CPUID_REGISTERS),
            prop::option::weighted(0.3, select(CPUID_VENDORS)),
        )
            .prop_map(|(leaf, register, vendor)| Key::Cpuid(
                leaf.to_string(),
                register.to_string(),
                vendor.map(str::to_string)
            )),
        2 => (any::<Index>(), case_flips()).prop_map(|(which, case)| Key::Repeat(which, case)),
        1 => prop_oneof![
            "\\PC{0,16}",
            "[a-z]{1,4}[ \"#=\t\\x00\\x1b][a-z]{0,4}",
            Just(String::new()),
            Just("k".repeat(5000)),
        ]
        .prop_map(Key::Odd),
    ]
}

fn case_flips() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 1 => Just(u64::MAX), 1 => any::<u64>()]
}

/// A cpuid mask: usually 32 or 39 characters, from the mask alphabet.
fn cpuid_mask() -> impl Strategy<Value = String> {
    let length = prop_oneof![3 => Just(32usize), 3 => Just(39usize), 2 => 0usize..=41];
    (length, vec(select(MASK_CHARACTERS), 41), any::<bool>()).prop_map(
        |(length, characters, grouped)| {
            characters
                .iter()
                .take(length)
                .enumerate()
                .map(|(index, &c)| match (grouped, index % 5 == 4, c) {
                    (true, true, _) => ':',
                    (true, false, ':') => '-',
                    _ => c,
                })
                .collect()
        },
    )
}

/// Pieces of a value in a file that is meant to parse: the value for the
/// key, well-formed escapes, control characters.
fn clean_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        8 => (any::<Index>(), cpuid_mask()).prop_map(|(pick, mask)| Piece::ForKey(pick, mask)),
        1 => "\\PC{0,12}".prop_map(Piece::Text),
        1 => select(GOOD_ESCAPES).prop_map(Piece::Escape),
        1 => select(CONTROLS).prop_map(Piece::Control),
    ]
}

/// Pieces of a value in a file that need not parse.
fn noisy_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => clean_piece(),
        2 => prop_oneof![
            select(MEMSIZES),
            select(BOOLEANS),
            select(MODES),
            select(SERIAL_TYPES),
            select(PATHS),
            select(GUEST_OSES),
            select(ENCODINGS),
            select(TEXTS),
        ]
        .prop_map(|text| Piece::Text(text.to_string())),
        2 => select(ESCAPES).prop_map(Piece::Escape),
        1 => select(INVALID_UTF8).prop_map(|bytes| Piece::Bytes(bytes.to_vec())),
        1 => (
            select(&['x', '|', '"', ' ', '\u{e9}'][..]),
            prop_oneof![9 => 1usize..300, 1 => 60_000usize..70_000],
        )
            .prop_map(|(c, n)| Piece::Long(c, n)),
    ]
}

fn noisy_form() -> impl Strategy<Value = Form> {
    prop_oneof![
        4 => select(TRAILERS).prop_map(|trailing| Form::Quoted { closed: true, trailing }),
        1 => Just(Form::Quoted { closed: false, trailing: "" }),
        2 => Just(Form::Bare),
    ]
}

fn clean_setting() -> impl Strategy<Value = Line> {
    (
        select(INDENTS),
        prop_oneof![12 => key(), 1 => Just(Key::Odd("x".to_string()))],
        select(&[" = ", "=", " =", "= "][..]),
        prop_oneof![6 => vec(clean_piece(), 1..2), 1 => vec(clean_piece(), 0..4)],
        prop_oneof![
            4 => Just(Form::Quoted { closed: true, trailing: "" }),
            1 => Just(Form::Quoted { closed: true, trailing: " # c" }),
            1 => Just(Form::Bare),
        ],
        prop::option::weighted(0.1, "[^\r\n]{0,20}"),
    )
        .prop_map(setting_line)
}

fn noisy_setting() -> impl Strategy<Value = Line> {
    (
        select(INDENTS),
        key(),
        select(SEPARATORS),
        prop_oneof![4 => vec(noisy_piece(), 1..2), 1 => vec(noisy_piece(), 0..5)],
        noisy_form(),
        prop::option::weighted(0.15, "\\PC{0,20}"),
    )
        .prop_map(setting_line)
}

type SettingParts = (
    &'static str,
    Key,
    &'static str,
    Vec<Piece>,
    Form,
    Option<String>,
);

fn setting_line((indent, key, separator, value, form, comment): SettingParts) -> Line {
    Line::Setting {
        indent,
        key,
        separator,
        value,
        form,
        comment,
    }
}

/// Lines meant to parse: settings, comments, blank lines, corpus lines.
fn clean_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        12 => clean_setting(),
        1 => "[^\r\n]{0,30}".prop_map(Line::Comment),
        1 => select(BLANKS).prop_map(Line::Blank),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(file, line)| Line::Seed(file, line)),
    ]
}

/// Lines of anything.
fn noisy_line() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => clean_line(),
        4 => noisy_setting(),
        1 => "\\PC{0,30}".prop_map(Line::Comment),
        1 => vec(any::<u8>(), 0..24).prop_map(Line::Raw),
    ]
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        6 => Just(Ending::Lf),
        2 => Just(Ending::CrLf),
        1 => Just(Ending::Cr),
        1 => any::<u64>().prop_map(Ending::Mixed),
    ]
}

/// Generated `.vmx` files: three in four meant to parse (with values of
/// every kind, good and bad), the rest with malformed lines of every sort.
pub fn vmx_case() -> impl Strategy<Value = VmxCase> {
    let lines = prop_oneof![
        3 => vec(clean_line(), 0..12),
        1 => vec(noisy_line(), 0..8),
    ];
    (
        prop::bool::weighted(0.15),
        lines,
        prop_oneof![4 => Just(Ending::Lf), 1 => ending()],
        prop::bool::weighted(0.8),
    )
        .prop_map(|(bom, lines, ending, final_newline)| VmxCase {
            bom,
            lines,
            ending,
            final_newline,
        })
}

impl VmxCase {
    /// The file's bytes; `seeds` are the lines of existing `.vmx` files.
    pub fn render(&self, seeds: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut out = if self.bom { BOM.to_vec() } else { Vec::new() };
        let mut keys: Vec<String> = Vec::new();
        for (number, line) in self.lines.iter().enumerate() {
            if number > 0 {
                out.extend_from_slice(self.ending.at(number));
            }
            out.extend(render_line(line, seeds, &mut keys));
        }
        if self.final_newline && !self.lines.is_empty() {
            out.extend_from_slice(self.ending.at(self.lines.len()));
        }
        out
    }
}

impl Ending {
    fn at(self, line: usize) -> &'static [u8] {
        match self {
            Ending::Lf => b"\n",
            Ending::CrLf => b"\r\n",
            Ending::Cr => b"\r",
            Ending::Mixed(bits) => {
                [&b"\n"[..], b"\r\n", b"\r", b"\n"][(bits >> (2 * (line % 32))) as usize & 3]
            }
        }
    }
}

fn render_line(line: &Line, seeds: &[Vec<Vec<u8>>], keys: &mut Vec<String>) -> Vec<u8> {
    match line {
        Line::Setting {
            indent,
            key,
            separator,
            value,
            form,
            comment,
        } => {
            let key = render_key(key, keys);
            let mut out = [indent.as_bytes(), key.as_bytes(), separator.as_bytes()].concat();
            out.extend(render_value(&key, value, form));
            keys.push(key);
            if let Some(comment) = comment {
                out.extend(format!(" # {comment}").bytes());
            }
            out
        }
        Line::Comment(text) => format!("# {text}").into_bytes(),
        Line::Blank(text) => text.as_bytes().to_vec(),
        Line::Seed(file, line) => seed_line(seeds, file, line),
        Line::Raw(bytes) => bytes.clone(),
    }
}

fn seed_line(seeds: &[Vec<Vec<u8>>], file: &Index, line: &Index) -> Vec<u8> {
    if seeds.is_empty() {
        return Vec::new();
    }
    let lines = &seeds[file.index(seeds.len())];
    if lines.is_empty() {
        return Vec::new();
    }
    lines[line.index(lines.len())].clone()
}

fn render_key(key: &Key, earlier: &[String]) -> String {
    match key {
        Key::Known(which, case) => flip_case(KNOWN_KEYS[which.index(KNOWN_KEYS.len())], *case),
        Key::Guestinfo(name) => format!("{}{name}", KNOWN_KEY_PREFIXES[0]),
        Key::Cpuid(leaf, register, vendor) => {
            let mut key = format!("{}{leaf}.{register}", KNOWN_KEY_PREFIXES[1]);
            if let Some(vendor) = vendor {
                key.push('.');
                key.push_str(vendor);
            }
            key
        }
        Key::Repeat(which, case) if !earlier.is_empty() => {
            flip_case(&earlier[which.index(earlier.len())], *case)
        }
        Key::Repeat(which, case) => flip_case(KNOWN_KEYS[which.index(KNOWN_KEYS.len())], *case),
        Key::Odd(text) => text.clone(),
    }
}

/// Flips the case of the ASCII letters whose position has a 1 bit in `case`.
fn flip_case(key: &str, case: u64) -> String {
    key.chars()
        .enumerate()
        .map(|(index, c)| {
            if case >> (index % 64) & 1 == 1 {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// The values a key takes, good and bad (lower-case key).
fn values_for(key: &str) -> &'static [&'static str] {
    match key {
        "memsize" => MEMSIZES,
        "monitor.virtual_exec" | "monitor.virtual_mmu" => MODES,
        "serial0.filetype" => SERIAL_TYPES,
        "nestmon.kernel" | "nestmon.initrd" | "serial0.filename" => PATHS,
        "guestos" => GUEST_OSES,
        ".encoding" => ENCODINGS,
        "monitor_control.vt32"
        | "monitor_control.enable_svm"
        | "monitor_control.restrict_backdoor"
        | "vhv.enable"
        | "vmx.allownested"
        | "hypervisor.cpuid.v0"
        | "serial0.present" => BOOLEANS,
        _ => TEXTS,
    }
}

fn render_value(key: &str, pieces: &[Piece], form: &Form) -> Vec<u8> {
    let key = key.to_ascii_lowercase();
    let mut body = Vec::new();
    for piece in pieces {
        match piece {
            Piece::ForKey(_, mask) if key.starts_with(KNOWN_KEY_PREFIXES[1]) => {
                body.extend_from_slice(mask.as_bytes())
            }
            Piece::ForKey(pick, _) => {
                let values = values_for(&key);
                body.extend_from_slice(values[pick.index(values.len())].as_bytes())
            }
            Piece::Text(text) => body.extend_from_slice(text.as_bytes()),
            Piece::Escape(text) | Piece::Control(text) => body.extend_from_slice(text.as_bytes()),
            Piece::Bytes(bytes) => body.extend_from_slice(bytes),
            Piece::Long(c, n) => body.extend(c.to_string().repeat(*n).bytes()),
        }
    }
    match form {
        Form::Quoted { closed, trailing } => {
            let mut out = vec![b'"'];
            out.extend(body);
            if *closed {
                out.push(b'"');
                out.extend_from_slice(trailing.as_bytes());
            }
            out
        }
        Form::Bare => body,
    }
}
