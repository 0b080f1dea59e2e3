//! Fuzz target: the `.vmx` parser and the configuration loader
//! (`monitor::config::load`), up to the guest CPU model built from the
//! configuration.
//!
//! Every corpus file in `tests/corpus/vmx/` is replayed, then files are
//! generated for the time budget (`NESTMON_FUZZ_SECONDS`, see
//! docs/fuzzing.md) by `fuzz_vmx/strategy.rs`. Each is written to a scratch
//! directory (which also holds a `guest.elf`) and loaded as `nestmon run
//! FILE.vmx` would load it. Properties:
//!
//! - loading returns, without panicking, within the watchdog's limit;
//! - an error is a [`ConfigError`] naming this file and a line that exists
//!   and could cause it (not blank, not a comment; for invalid UTF-8, the
//!   line holding the bad byte), and its message starts `FILE:LINE: `;
//! - a configuration passes its documented checks (memsize range, one mask
//!   per key, an existing kernel), every warning and note starts
//!   `FILE:LINE: `, and a CPU model error names a key set in the file;
//! - no error, warning or note contains a control character (they are
//!   printed to a terminal, and the file is untrusted);
//! - the result is the same when loaded again, when the file starts with a
//!   UTF-8 byte order mark, and when its lines end with CR LF.
//!
//! A second generator writes well-formed files from known settings; they
//! must parse back to exactly those keys, values and lines, and each
//! setting must read back the same through `--set`. A line with a `|`
//! escape not followed by two hex digits, or a value holding a NUL, must
//! make the parse fail there (and `--set` refuse the NUL).

#[path = "support/fuzz.rs"]
mod fuzz;
#[path = "fuzz_vmx/roundtrip.rs"]
mod roundtrip;
#[path = "fuzz_vmx/strategy.rs"]
mod strategy;

use fuzz::{Target, Watchdog};
use monitor::config::{self, ConfigError, ConfigSources, Loaded, Origin, VmConfig};
use monitor::cpuid::CpuModel;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use strategy::BOM;

const TARGET: Target = Target {
    name: "fuzz_vmx",
    corpus: "vmx",
    extension: "vmx",
};

/// A scratch directory with the `.vmx` file under test and a kernel, in
/// memory when the host has `/dev/shm` (a case writes the file up to four
/// times).
struct Workspace {
    dir: PathBuf,
    vmx: PathBuf,
}

impl Workspace {
    fn new(test: &str) -> Workspace {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("nestmon-{}-fuzz-vmx-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        std::fs::write(dir.join("guest.elf"), b"\x7fELF not really a kernel").expect("kernel");
        let vmx = dir.join("fuzz.vmx");
        Workspace { dir, vmx }
    }

    fn write(&self, bytes: &[u8]) {
        std::fs::write(&self.vmx, bytes).expect("write the .vmx file");
    }

    /// Writes `bytes` as the `.vmx` file and loads it.
    fn load(&self, bytes: &[u8]) -> Result<Loaded, ConfigError> {
        self.write(bytes);
        config::load(&ConfigSources {
            vmx: Some(self.vmx.clone()),
            ..ConfigSources::default()
        })
    }

    /// Loads `bytes` and its variants and checks every property.
    fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let result = self.load(bytes);
        let lines = FileLines::new(bytes);
        match &result {
            Ok(loaded) => verify_loaded(loaded, &self.vmx, &lines)?,
            Err(error) => verify_error(error, &self.vmx, &lines)?,
        }
        let expected = outcome(&result);
        self.same_outcome(bytes, &expected, "loading the file again")?;
        if !bytes.starts_with(BOM) {
            self.same_outcome(&[BOM, bytes].concat(), &expected, "a byte order mark")?;
        }
        if bytes.contains(&b'\n') && !bytes.contains(&b'\r') {
            let crlf = bytes.iter().fold(Vec::new(), |mut out, &b| {
                if b == b'\n' {
                    out.push(b'\r');
                }
                out.push(b);
                out
            });
            self.same_outcome(&crlf, &expected, "CR LF line endings")?;
        }
        Ok(())
    }

    fn same_outcome(&self, bytes: &[u8], expected: &str, variant: &str) -> Result<(), String> {
        let got = outcome(&self.load(bytes));
        if got != expected {
            return Err(format!(
                "{variant} changes the result:\n  was: {expected}\n  now: {got}"
            ));
        }
        Ok(())
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The whole result as text, to compare loads.
fn outcome(result: &Result<Loaded, ConfigError>) -> String {
    match result {
        Ok(loaded) => format!("{loaded:?}"),
        Err(error) => format!("{error:?} / {error}"),
    }
}

/// The lines of a file as the parser numbers them (split at LF).
struct FileLines<'a> {
    lines: Vec<&'a [u8]>,
    /// The file's size in bytes.
    size: usize,
}

impl<'a> FileLines<'a> {
    fn new(bytes: &'a [u8]) -> FileLines<'a> {
        let size = bytes.len();
        let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        FileLines {
            lines: bytes.split(|&b| b == b'\n').collect(),
            size,
        }
    }

    /// Line `number` (1-based) without its CR, if the file has it.
    fn get(&self, number: usize) -> Option<&'a [u8]> {
        let line = *self.lines.get(number.checked_sub(1)?)?;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// Whether line `number` could hold a setting (it is not blank or a comment).
    fn holds_text(&self, number: usize) -> bool {
        self.get(number).is_some_and(|line| {
            let text = String::from_utf8_lossy(line);
            let text = text.trim();
            !text.is_empty() && !text.starts_with('#')
        })
    }
}

/// The file line an error names, from its typed fields.
fn error_line(error: &ConfigError) -> Option<usize> {
    match error {
        ConfigError::NotUtf8 { line, .. } | ConfigError::Syntax { line, .. } => Some(*line),
        ConfigError::InvalidValue { origin, .. }
        | ConfigError::MissingValue { origin, .. }
        | ConfigError::FileNotFound { origin, .. }
        | ConfigError::NotAFile { origin, .. }
        | ConfigError::FileTooLarge { origin, .. }
        | ConfigError::FileUnreadable { origin, .. }
        | ConfigError::Cpuid { origin, .. } => match origin {
            Origin::File { line, .. } => Some(*line),
            Origin::CommandLine { .. } => None,
        },
        ConfigError::Read { .. }
        | ConfigError::NotAVmxFile { .. }
        | ConfigError::VmxTooLarge { .. }
        | ConfigError::BadSetting { .. } => None,
    }
}

fn verify_error(error: &ConfigError, vmx: &Path, lines: &FileLines) -> Result<(), String> {
    let message = error.to_string();
    if let ConfigError::VmxTooLarge { limit, .. } = error {
        if lines.size as u64 > *limit {
            return Ok(());
        }
        return Err(format!(
            "a file of {} bytes is refused: {message}",
            lines.size
        ));
    }
    let line = error_line(error)
        .ok_or_else(|| format!("the error names no line of the file: {message}"))?;
    let prefix = format!("{}:{line}: ", vmx.display());
    if !message.starts_with(&prefix) {
        return Err(format!(
            "the error does not start with {prefix:?}: {message:?}"
        ));
    }
    printable("error", &message)?;
    let plausible = match error {
        ConfigError::NotUtf8 { .. } => lines
            .get(line)
            .is_some_and(|text| std::str::from_utf8(text).is_err()),
        _ => lines.holds_text(line),
    };
    if !plausible {
        return Err(format!(
            "the error names line {line}, which cannot cause it ({:?}): {message:?}",
            lines.get(line).map(String::from_utf8_lossy)
        ));
    }
    Ok(())
}

/// A message for the terminal holds no control character.
fn printable(what: &str, message: &str) -> Result<(), String> {
    if message.contains(char::is_control) {
        return Err(format!(
            "the {what} contains a control character: {message:?}"
        ));
    }
    Ok(())
}

fn verify_loaded(loaded: &Loaded, vmx: &Path, lines: &FileLines) -> Result<(), String> {
    verify_config(&loaded.config)?;
    for diagnostic in &loaded.diagnostics {
        let text = diagnostic.to_string();
        let named = diagnostic
            .message
            .strip_prefix(&format!("{}:", vmx.display()))
            .and_then(|rest| rest.split_once(": "))
            .and_then(|(line, _)| line.parse::<usize>().ok());
        if !named.is_some_and(|line| lines.holds_text(line)) {
            return Err(format!("the diagnostic names no setting line: {text:?}"));
        }
        printable("diagnostic", &text)?;
    }
    verify_cpu_model(loaded)
}

fn verify_config(config: &VmConfig) -> Result<(), String> {
    let memsize = config.memsize_mib;
    if !(4..=3072).contains(&memsize) || !memsize.is_multiple_of(4) {
        return Err(format!("accepted memsize {memsize}"));
    }
    let mut keys: Vec<String> = config
        .cpuid_masks
        .iter()
        .map(|mask| mask.key.to_ascii_lowercase())
        .collect();
    keys.sort();
    if keys.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(format!("two masks for one key: {keys:?}"));
    }
    if let Some(kernel) = &config.kernel {
        if !kernel.is_file() {
            return Err(format!("accepted a kernel that is not a file: {kernel:?}"));
        }
    }
    if let Some(item) = config.initrd.iter().find(|item| !item.path.is_file()) {
        return Err(format!("accepted an initrd that is not a file: {item:?}"));
    }
    Ok(())
}

/// A host CPU: an Intel part with the usual features, no hypervisor.
fn fake_host(leaf: u32, _subleaf: u32) -> [u32; 4] {
    match leaf {
        0 => [0x16, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
        1 => [0x906ea, 0x0010_0800, 0x7ffa_fbbf, 0xbfeb_fbff],
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        0x8000_0001 => [0, 0, 0x121, 0x2c10_0800],
        _ => [0; 4],
    }
}

/// The CPU model builds deterministically, or fails naming a key of the file.
fn verify_cpu_model(loaded: &Loaded) -> Result<(), String> {
    let first = CpuModel::new(&loaded.config, &fake_host);
    let second = CpuModel::new(&loaded.config, &fake_host);
    if format!("{first:?}") != format!("{second:?}") {
        return Err("the CPU model differs between two builds".to_string());
    }
    match first {
        Ok(_) => Ok(()),
        Err(error) => match loaded.origin_of(error.key()) {
            Some(Origin::File { .. }) => Ok(()),
            other => Err(format!(
                "CPU model error for a key not set in the file ({other:?}): {error}"
            )),
        },
    }
}

/// The lines of the existing `.vmx` files: material for generated files.
fn seeds() -> &'static [Vec<Vec<u8>>] {
    static SEEDS: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
        let mut files: Vec<Vec<u8>> = ["vmx/valid", "vmx/invalid"]
            .iter()
            .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect("the .vmx corpus"))
            .map(|entry| std::fs::read(entry.expect("corpus entry").path()).expect("read"))
            .collect();
        files.extend(TARGET.corpus_files().into_iter().map(|(_, bytes)| bytes));
        files
            .iter()
            .map(|file| file.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect())
            .collect()
    })
}

fn checker(test: &str) -> Watchdog<Vec<u8>> {
    let workspace = Workspace::new(test);
    Watchdog::spawn(move |bytes: Vec<u8>| workspace.check(&bytes))
}

/// Parses a rendered well-formed file and each of its settings as `--set`.
fn check_round_trip(workspace: &Workspace, rendered: &roundtrip::Rendered) -> Result<(), String> {
    check_settings(&rendered.settings)?;
    workspace.write(&rendered.bytes);
    let parsed = config::read_vmx(&workspace.vmx);
    if let Some(line) = rendered.malformed {
        return match parsed {
            Err(ConfigError::Syntax { line: named, .. }) if named == line => Ok(()),
            other => Err(format!("line {line} is malformed, but: {other:?}")),
        };
    }
    let entries = parsed.map_err(|e| format!("refused: {e}"))?;
    let got: Vec<(String, String, usize)> = entries
        .into_iter()
        .map(|entry| {
            let line = match entry.origin {
                Origin::File { line, .. } => line,
                Origin::CommandLine { .. } => 0,
            };
            (entry.key, entry.value, line)
        })
        .collect();
    if got != rendered.entries {
        return Err(format!("parsed {got:?}\nwritten {:?}", rendered.entries));
    }
    Ok(())
}

/// Each `(key, value, quoted)` read as `--set KEY=VALUE`, verbatim (unless
/// it starts with a quote) and quoted, gives back the key and value; a
/// value holding a NUL is refused.
fn check_settings(settings: &[(String, String, String)]) -> Result<(), String> {
    for (key, value, quoted) in settings {
        let mut forms = vec![quoted];
        if !value.trim_start().starts_with('"') {
            forms.push(value);
        }
        for form in forms {
            let argument = format!("{key}={form}");
            match (config::parse_setting(&argument), value.contains('\0')) {
                (Err(ConfigError::BadSetting { .. }), true) => {}
                (Ok(entry), false) if (&entry.key, &entry.value) == (key, value) => {}
                (other, _) => return Err(format!("--set {argument:?} read as {other:?}")),
            }
        }
    }
    Ok(())
}

#[test]
fn corpus_files_load_or_fail_naming_their_file_and_line() {
    let checker = checker("replay");
    TARGET.replay(|bytes| checker.check(bytes.to_vec()));
}

#[test]
fn generated_files_load_or_fail_naming_their_file_and_line() {
    let checker = checker("generated");
    TARGET.run(
        strategy::vmx_case(),
        |case| case.render(seeds()),
        |case| {
            checker
                .check(case.render(seeds()))
                .map_err(TestCaseError::fail)
        },
    );
}

#[test]
fn well_formed_files_parse_to_the_settings_they_were_written_from() {
    let workspace = Workspace::new("round-trip");
    let checker = Watchdog::spawn(move |case: roundtrip::WellFormed| {
        check_round_trip(&workspace, &case.render())
    });
    TARGET.run(
        roundtrip::well_formed(),
        |case| case.render().bytes,
        |case| checker.check(case).map_err(TestCaseError::fail),
    );
}

/// The checks above must be able to fail: each is shown a faulty outcome.
mod checks_can_fail {
    use super::*;

    fn syntax_error(line: usize) -> ConfigError {
        ConfigError::Syntax {
            path: PathBuf::from("/d/x.vmx"),
            line,
            reason: "bad".to_string(),
        }
    }

    #[test]
    fn an_error_naming_a_comment_line_is_caught() {
        let lines = FileLines::new(b"# comment\nbroken\n");
        let vmx = Path::new("/d/x.vmx");
        assert!(verify_error(&syntax_error(1), vmx, &lines).is_err());
        assert!(verify_error(&syntax_error(2), vmx, &lines).is_ok());
        assert!(verify_error(&syntax_error(9), vmx, &lines).is_err());
    }

    #[test]
    fn a_message_with_a_control_character_is_caught() {
        assert!(printable("error", "x.vmx:1: found \x1b[2J").is_err());
        assert!(printable("error", "x.vmx:1: found \\u{1b}[2J").is_ok());
    }

    #[test]
    fn an_accepted_memsize_out_of_range_is_caught() {
        let config = VmConfig {
            memsize_mib: 3076,
            ..VmConfig::default()
        };
        assert!(verify_config(&config).is_err());
        assert!(verify_config(&VmConfig::default()).is_ok());
    }

    #[test]
    fn a_byte_order_mark_does_not_hide_the_first_line() {
        let lines = FileLines::new(b"\xef\xbb\xbf# comment\n");
        assert!(!lines.holds_text(1));
    }
}
