//! The guest CPU model: what the guest's `CPUID` instruction returns.
//!
//! The default model is an i686-class Intel CPU (family 6, model 13,
//! stepping 8 — a Pentium M class part with SSE2 and no long mode), branded
//! "nestmon virtual CPU". The feature bits it offers are exactly
//! [`GUEST_FEATURES`], the features the monitor really implements, plus the
//! [`HOST_DEPENDENT_FEATURES`] the host has (instruction-set extensions that
//! translated code runs as the host's own instructions, with no state beyond
//! FXSAVE's). Offering a new feature (PSE, PGE, SEP, APIC, …) is a one-line
//! change to those lists.
//!
//! The instruction set the translator lets the guest use follows from the
//! model ([`CpuModel::guest_isa`]): an instruction of an extension whose bit
//! is clear raises #UD, as on a CPU without it. Extensions the translator
//! cannot offer (AVX and the rest of XSAVE-managed state, MONITOR, SYSCALL,
//! RDTSCP, 3DNow!, …) are refused when a mask forces their bit to 1 and
//! cleared when a mask copies it from the host.
//!
//! `cpuid.<leaf>.<reg>[.amd|.intel]` masks from the configuration are applied
//! on top of the model with VMware's mask characters, one per bit, most
//! significant bit first, optionally grouped by `:` every four characters:
//!
//! | char | the guest sees                    | power-on requirement      |
//! |------|-----------------------------------|---------------------------|
//! | `-`  | the model's default value         | none                      |
//! | `0`  | 0                                 | none                      |
//! | `1`  | 1                                 | none                      |
//! | `H`  | the host's value                  | none                      |
//! | `h`  | the host's value                  | none                      |
//! | `R`  | the host's value, which must be 1 | host bit is 1, else error |
//! | `r`  | the host's value, which must be 0 | host bit is 0, else error |
//!
//! (`H` and `h` differ in VMware only in migration checks, which nestmon
//! does not have.) A vendor-neutral mask is applied first, then a mask with
//! the host's vendor suffix; masks for the other vendor are ignored.
//!
//! Invariants:
//! * Long mode (leaf 0x8000_0001 EDX bit 29) is never offered: a mask that
//!   forces it to 1 is refused and a host value copied by `H`/`h` is cleared.
//! * Masks only apply to leaves the model offers; a mask for any other leaf
//!   is an error naming its key.
//! * Leaves above the maximum basic or extended leaf return the highest
//!   basic leaf's values, as Intel CPUs do; the hypervisor leaves
//!   (0x4000_0000 `VMwareVMware` and 0x4000_0010 timing) exist only when
//!   `hypervisor.cpuid.v0` is TRUE.

use crate::config::VmConfig;
use iced_x86::CpuidFeature;
use std::collections::BTreeMap;
use std::fmt;
use translator::GuestIsa;

/// One of the four registers `CPUID` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Register {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl Register {
    fn index(self) -> usize {
        match self {
            Register::Eax => 0,
            Register::Ebx => 1,
            Register::Ecx => 2,
            Register::Edx => 3,
        }
    }

    fn parse(text: &str) -> Option<Register> {
        match text.to_ascii_lowercase().as_str() {
            "eax" => Some(Register::Eax),
            "ebx" => Some(Register::Ebx),
            "ecx" => Some(Register::Ecx),
            "edx" => Some(Register::Edx),
            _ => None,
        }
    }
}

impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Register::Eax => "eax",
            Register::Ebx => "ebx",
            Register::Ecx => "ecx",
            Register::Edx => "edx",
        };
        f.write_str(name)
    }
}

/// A CPU feature flag: one bit of one register of one leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The name Intel's manual and `/proc/cpuinfo` use.
    pub name: &'static str,
    /// The `CPUID` leaf.
    pub leaf: u32,
    /// The register within the leaf.
    pub register: Register,
    /// The bit within the register.
    pub bit: u8,
}

const fn leaf1_edx(name: &'static str, bit: u8) -> Feature {
    Feature {
        name,
        leaf: 1,
        register: Register::Edx,
        bit,
    }
}

/// x87 FPU on chip.
pub const FPU: Feature = leaf1_edx("fpu", 0);
/// Debugging extensions (CR4.DE: I/O breakpoints, DR4/DR5 reserved).
pub const DE: Feature = leaf1_edx("de", 2);
/// 4 MiB pages.
pub const PSE: Feature = leaf1_edx("pse", 3);
/// Time-stamp counter (`RDTSC`).
pub const TSC: Feature = leaf1_edx("tsc", 4);
/// Model-specific registers (`RDMSR`/`WRMSR`).
pub const MSR: Feature = leaf1_edx("msr", 5);
/// `CMPXCHG8B`.
pub const CX8: Feature = leaf1_edx("cx8", 8);
/// On-chip local APIC.
pub const APIC: Feature = leaf1_edx("apic", 9);
/// `SYSENTER`/`SYSEXIT`.
pub const SEP: Feature = leaf1_edx("sep", 11);
/// Global pages.
pub const PGE: Feature = leaf1_edx("pge", 13);
/// `CMOVcc`, `FCMOVcc`, `FCOMI`.
pub const CMOV: Feature = leaf1_edx("cmov", 15);
/// Page attribute table.
pub const PAT: Feature = leaf1_edx("pat", 16);
/// MMX.
pub const MMX: Feature = leaf1_edx("mmx", 23);
/// `FXSAVE`/`FXRSTOR`.
pub const FXSR: Feature = leaf1_edx("fxsr", 24);
/// SSE.
pub const SSE: Feature = leaf1_edx("sse", 25);
/// SSE2.
pub const SSE2: Feature = leaf1_edx("sse2", 26);
/// "Running under a hypervisor" (leaf 1 ECX bit 31); governed by
/// `hypervisor.cpuid.v0`, not by [`GUEST_FEATURES`].
pub const HYPERVISOR: Feature = Feature {
    name: "hypervisor",
    leaf: 1,
    register: Register::Ecx,
    bit: 31,
};
/// PAE (leaf 1 EDX bit 6); offered only with long mode
/// ([`CpuModel::with_long_mode`]).
pub const PAE: Feature = leaf1_edx("pae", 6);
/// Long mode; offered only to a 64-bit kernel under hardware execution
/// ([`CpuModel::with_long_mode`]), never by a mask.
pub const LM: Feature = Feature {
    name: "lm",
    leaf: 0x8000_0001,
    register: Register::Edx,
    bit: 29,
};

/// SSE3 (leaf 1 ECX bit 0).
pub const SSE3: Feature = leaf1_ecx("sse3", 0);
/// PCLMULQDQ.
pub const PCLMULQDQ: Feature = leaf1_ecx("pclmulqdq", 1);
/// SSSE3.
pub const SSSE3: Feature = leaf1_ecx("ssse3", 9);
/// SSE4.1.
pub const SSE4_1: Feature = leaf1_ecx("sse4_1", 19);
/// SSE4.2.
pub const SSE4_2: Feature = leaf1_ecx("sse4_2", 20);
/// POPCNT.
pub const POPCNT: Feature = leaf1_ecx("popcnt", 23);
/// AES-NI.
pub const AES: Feature = leaf1_ecx("aes", 25);

const fn leaf1_ecx(name: &'static str, bit: u8) -> Feature {
    Feature {
        name,
        leaf: 1,
        register: Register::Ecx,
        bit,
    }
}

/// Extensions offered when the host has them: translated code runs them as
/// the host's own instructions, so a host without one could not run them.
pub const HOST_DEPENDENT_FEATURES: &[Feature] =
    &[SSE3, PCLMULQDQ, SSSE3, SSE4_1, SSE4_2, POPCNT, AES];

/// The features the monitor implements and therefore offers the guest:
/// the debugging extensions (I/O breakpoints, DR4/DR5 #UD with CR4.DE),
/// 4 MiB pages and global pages (the shadow MMU walks both; global pages
/// are flushed more often than needed, which the architecture allows),
/// `RDMSR`/`WRMSR` with the MSR file of `cpu::msr`, `SYSENTER`/`SYSEXIT`,
/// the PAT (storage; memory types do not matter to a translated guest).
///
/// This is the one list to extend when the monitor learns a feature (MTRR,
/// ...). The APIC bit is the machine's (`VmConfig::apic`), not the CPU
/// model's.
pub const GUEST_FEATURES: &[Feature] = &[
    FPU, DE, PSE, TSC, MSR, CX8, SEP, PGE, CMOV, PAT, MMX, FXSR, SSE, SSE2,
];

/// A CPUID bit that announces an instruction-set extension, and the
/// iced-x86 features (instruction groups) it enables.
struct IsaBit {
    leaf: u32,
    register: Register,
    bit: u8,
    name: &'static str,
    features: &'static [CpuidFeature],
}

const fn isa_bit(
    leaf: u32,
    register: Register,
    bit: u8,
    name: &'static str,
    features: &'static [CpuidFeature],
) -> IsaBit {
    IsaBit {
        leaf,
        register,
        bit,
        name,
        features,
    }
}

/// Every CPUID bit of the modelled leaves that enables instructions. A bit
/// whose features the translator cannot offer ([`GuestIsa::can_offer`]) is
/// refused when a mask sets it.
const ISA_BITS: &[IsaBit] = {
    use CpuidFeature as F;
    use Register::{Ecx, Edx};
    const EXT: u32 = 0x8000_0001;
    &[
        isa_bit(1, Edx, 0, "fpu", &[F::FPU, F::FPU287, F::FPU387]),
        isa_bit(1, Edx, 4, "tsc", &[F::TSC]),
        isa_bit(1, Edx, 5, "msr", &[F::MSR]),
        isa_bit(1, Edx, 8, "cx8", &[F::CX8]),
        isa_bit(1, Edx, 11, "sep", &[F::SEP]),
        isa_bit(1, Edx, 15, "cmov", &[F::CMOV]),
        isa_bit(1, Edx, 19, "clflush", &[F::CLFSH]),
        isa_bit(1, Edx, 23, "mmx", &[F::MMX]),
        isa_bit(1, Edx, 24, "fxsr", &[F::FXSR]),
        isa_bit(1, Edx, 25, "sse", &[F::SSE]),
        isa_bit(1, Edx, 26, "sse2", &[F::SSE2]),
        isa_bit(1, Ecx, 0, "sse3", &[F::SSE3]),
        isa_bit(1, Ecx, 1, "pclmulqdq", &[F::PCLMULQDQ]),
        isa_bit(1, Ecx, 3, "monitor", &[F::MONITOR]),
        isa_bit(1, Ecx, 5, "vmx", &[F::VMX]),
        isa_bit(1, Ecx, 6, "smx", &[F::SMX]),
        isa_bit(1, Ecx, 9, "ssse3", &[F::SSSE3]),
        isa_bit(1, Ecx, 12, "fma", &[F::FMA]),
        isa_bit(1, Ecx, 13, "cx16", &[F::CMPXCHG16B]),
        isa_bit(1, Ecx, 19, "sse4_1", &[F::SSE4_1]),
        isa_bit(1, Ecx, 20, "sse4_2", &[F::SSE4_2]),
        isa_bit(1, Ecx, 22, "movbe", &[F::MOVBE]),
        isa_bit(1, Ecx, 23, "popcnt", &[F::POPCNT]),
        isa_bit(1, Ecx, 25, "aes", &[F::AES]),
        isa_bit(1, Ecx, 26, "xsave", &[F::XSAVE]),
        isa_bit(1, Ecx, 28, "avx", &[F::AVX]),
        isa_bit(1, Ecx, 29, "f16c", &[F::F16C]),
        isa_bit(1, Ecx, 30, "rdrand", &[F::RDRAND]),
        isa_bit(EXT, Ecx, 2, "svm", &[F::SVM]),
        isa_bit(EXT, Ecx, 5, "abm", &[F::LZCNT]),
        isa_bit(EXT, Ecx, 6, "sse4a", &[F::SSE4A]),
        isa_bit(EXT, Ecx, 8, "3dnowprefetch", &[F::PREFETCHW]),
        isa_bit(EXT, Ecx, 11, "xop", &[F::XOP]),
        isa_bit(EXT, Ecx, 12, "skinit", &[F::SKINIT]),
        isa_bit(EXT, Ecx, 15, "lwp", &[F::LWP]),
        isa_bit(EXT, Ecx, 16, "fma4", &[F::FMA4]),
        isa_bit(EXT, Ecx, 21, "tbm", &[F::TBM]),
        isa_bit(EXT, Ecx, 29, "monitorx", &[F::MONITORX]),
        isa_bit(EXT, Edx, 11, "syscall", &[F::SYSCALL]),
        isa_bit(EXT, Edx, 27, "rdtscp", &[F::RDTSCP]),
        isa_bit(EXT, Edx, 30, "3dnowext", &[F::D3NOWEXT]),
        isa_bit(EXT, Edx, 31, "3dnow", &[F::D3NOW]),
    ]
};

impl IsaBit {
    fn offerable(&self) -> bool {
        self.features.iter().all(|f| GuestIsa::can_offer(*f))
    }
}

/// The vendor string of the model.
pub const VENDOR: &str = "GenuineIntel";
/// The brand string of the model (leaves 0x8000_0002..=0x8000_0004).
pub const BRAND: &str = "nestmon virtual CPU";
/// Family 6 (P6 / i686).
pub const FAMILY: u32 = 6;
/// Model 13 (Pentium M class).
pub const MODEL: u32 = 13;
/// Stepping 8.
pub const STEPPING: u32 = 8;
/// The highest basic leaf (leaf 2, cache descriptors).
pub const MAX_BASIC_LEAF: u32 = 2;
/// The highest extended leaf (the end of the brand string).
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0004;
/// The hypervisor vendor leaf.
pub const HYPERVISOR_VENDOR_LEAF: u32 = 0x4000_0000;
/// The hypervisor timing leaf (TSC and bus frequency in kHz).
pub const HYPERVISOR_TIMING_LEAF: u32 = 0x4000_0010;
/// The hypervisor signature of leaf 0x4000_0000.
pub const HYPERVISOR_SIGNATURE: &str = "VMwareVMware";
/// The guest's bus (local APIC timer) frequency, reported in leaf 0x4000_0010.
pub const BUS_HZ: u64 = 100_000_000;
/// The guest TSC frequency when the host neither reports its own nor lets
/// it be measured.
pub const FALLBACK_TSC_HZ: u64 = 1_000_000_000;

/// Which hosts a mask applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MaskVendor {
    /// Every host (no suffix).
    Any,
    /// Hosts whose CPU vendor is AMD (`.amd`).
    Amd,
    /// Hosts whose CPU vendor is Intel (`.intel`).
    Intel,
}

/// What a mask does with one bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskBit {
    /// `-`: keep the model's value.
    Default,
    /// `0`: the guest sees 0.
    Clear,
    /// `1`: the guest sees 1.
    Set,
    /// `H`/`h`: the guest sees the host's value.
    Host,
    /// `R`: the host's bit must be 1; the guest sees it.
    RequireSet,
    /// `r`: the host's bit must be 0; the guest sees it.
    RequireClear,
}

impl MaskBit {
    fn from_char(c: char) -> Option<MaskBit> {
        match c {
            '-' => Some(MaskBit::Default),
            '0' => Some(MaskBit::Clear),
            '1' => Some(MaskBit::Set),
            'H' | 'h' => Some(MaskBit::Host),
            'R' => Some(MaskBit::RequireSet),
            'r' => Some(MaskBit::RequireClear),
            _ => None,
        }
    }
}

/// One `cpuid.<leaf>.<reg>[.vendor]` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidMask {
    /// The key as written (for messages).
    pub key: String,
    /// The leaf (EAX input).
    pub leaf: u32,
    /// The register the mask applies to.
    pub register: Register,
    /// The hosts it applies to.
    pub vendor: MaskVendor,
    /// Per-bit actions; index 0 is bit 0 (the string's last character).
    pub bits: [MaskBit; 32],
}

/// Why a mask or the CPU model is unacceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuidError {
    /// The key is not `cpuid.<hex leaf>.<eax|ebx|ecx|edx>[.amd|.intel]`.
    #[error("{key}: expected cpuid.<leaf in hex>.<eax|ebx|ecx|edx>[.amd|.intel]")]
    BadKey {
        /// The key.
        key: String,
    },
    /// The mask string has the wrong length or `:` in the wrong places.
    #[error(
        "{key}: a mask is 32 characters, optionally grouped as xxxx:xxxx:…:xxxx, but \"{value}\" has {length}"
    )]
    BadLength {
        /// The key.
        key: String,
        /// The mask as written.
        value: String,
        /// Its length in characters.
        length: usize,
    },
    /// The mask string contains a character outside `01-HhRr`.
    #[error("{key}: unknown mask character '{character}' for bit {bit} (allowed: 0 1 - H h R r)")]
    BadCharacter {
        /// The key.
        key: String,
        /// The offending character.
        character: char,
        /// The bit it would control.
        bit: u8,
    },
    /// The mask targets a leaf the model does not offer.
    #[error("{key}: leaf {leaf:#x} is not offered by the nestmon CPU model")]
    LeafNotOffered {
        /// The key.
        key: String,
        /// The leaf.
        leaf: u32,
    },
    /// An `R`/`r` requirement does not hold on this host.
    #[error("{key}: bit {bit} must be {required} on the host, but the host's bit is {actual}")]
    RequirementNotMet {
        /// The key.
        key: String,
        /// The bit.
        bit: u8,
        /// The required host value.
        required: u8,
        /// The host's value.
        actual: u8,
    },
    /// The mask tries to offer long mode.
    #[error("{key}: long mode (bit 29) cannot be offered: nestmon runs 32-bit guests only")]
    LongModeRefused {
        /// The key.
        key: String,
    },
    /// The mask offers an instruction-set extension the binary translator
    /// cannot run confined to the guest or whose state it does not save.
    #[error("{key}: bit {bit} ({name}) cannot be offered: binary translation does not implement this extension")]
    ExtensionRefused {
        /// The key.
        key: String,
        /// The bit.
        bit: u8,
        /// The feature's name.
        name: &'static str,
    },
}

impl CpuidError {
    /// The configuration key the error is about.
    pub fn key(&self) -> &str {
        match self {
            CpuidError::BadKey { key }
            | CpuidError::BadLength { key, .. }
            | CpuidError::BadCharacter { key, .. }
            | CpuidError::LeafNotOffered { key, .. }
            | CpuidError::RequirementNotMet { key, .. }
            | CpuidError::LongModeRefused { key }
            | CpuidError::ExtensionRefused { key, .. } => key,
        }
    }
}

impl CpuidMask {
    /// Parses `key` (already known to start with `cpuid.`) and its value.
    pub fn parse(key: &str, value: &str) -> Result<CpuidMask, CpuidError> {
        let (leaf, register, vendor) = parse_mask_key(key)?;
        let bits = parse_mask_bits(key, value)?;
        Ok(CpuidMask {
            key: key.to_string(),
            leaf,
            register,
            vendor,
            bits,
        })
    }

    /// Combines the model's value with the host's according to the mask.
    fn apply(&self, model: u32, host: u32) -> Result<u32, CpuidError> {
        let mut result = 0u32;
        for (bit, action) in self.bits.iter().enumerate() {
            let model_bit = (model >> bit) & 1;
            let host_bit = (host >> bit) & 1;
            let value = match action {
                MaskBit::Default => model_bit,
                MaskBit::Clear => 0,
                MaskBit::Set => 1,
                MaskBit::Host => host_bit,
                MaskBit::RequireSet => self.require(bit, 1, host_bit)?,
                MaskBit::RequireClear => self.require(bit, 0, host_bit)?,
            };
            result |= value << bit;
        }
        Ok(result)
    }

    fn require(&self, bit: usize, required: u32, host_bit: u32) -> Result<u32, CpuidError> {
        if host_bit == required {
            Ok(host_bit)
        } else {
            Err(CpuidError::RequirementNotMet {
                key: self.key.clone(),
                bit: bit as u8,
                required: required as u8,
                actual: host_bit as u8,
            })
        }
    }

    fn forces_set(&self, bit: u8) -> bool {
        matches!(
            self.bits[usize::from(bit)],
            MaskBit::Set | MaskBit::RequireSet
        )
    }
}

fn parse_mask_key(key: &str) -> Result<(u32, Register, MaskVendor), CpuidError> {
    let bad_key = || CpuidError::BadKey {
        key: key.to_string(),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let (leaf_text, register_text, vendor) = match parts.as_slice() {
        [prefix, leaf, register] if prefix.eq_ignore_ascii_case("cpuid") => {
            (*leaf, *register, MaskVendor::Any)
        }
        [prefix, leaf, register, vendor] if prefix.eq_ignore_ascii_case("cpuid") => {
            let vendor = match vendor.to_ascii_lowercase().as_str() {
                "amd" => MaskVendor::Amd,
                "intel" => MaskVendor::Intel,
                _ => return Err(bad_key()),
            };
            (*leaf, *register, vendor)
        }
        _ => return Err(bad_key()),
    };
    let leaf_digits = leaf_text
        .strip_prefix("0x")
        .or_else(|| leaf_text.strip_prefix("0X"))
        .unwrap_or(leaf_text);
    if leaf_digits.is_empty()
        || leaf_digits.len() > 8
        || !leaf_digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(bad_key());
    }
    let leaf = u32::from_str_radix(leaf_digits, 16).map_err(|_| bad_key())?;
    let register = Register::parse(register_text).ok_or_else(bad_key)?;
    Ok((leaf, register, vendor))
}

fn parse_mask_bits(key: &str, value: &str) -> Result<[MaskBit; 32], CpuidError> {
    let characters: Vec<char> = value.chars().collect();
    let mask_characters: Vec<char> = match characters.len() {
        32 => characters.clone(),
        39 if is_grouped(&characters) => characters.iter().copied().filter(|c| *c != ':').collect(),
        _ => Vec::new(),
    };
    if mask_characters.len() != 32 {
        return Err(CpuidError::BadLength {
            key: key.to_string(),
            value: value.to_string(),
            length: characters.len(),
        });
    }
    let mut bits = [MaskBit::Default; 32];
    for (position, character) in mask_characters.iter().enumerate() {
        let bit = 31 - position;
        bits[bit] = MaskBit::from_char(*character).ok_or_else(|| CpuidError::BadCharacter {
            key: key.to_string(),
            character: *character,
            bit: bit as u8,
        })?;
    }
    Ok(bits)
}

/// True if `characters` is eight groups of four separated by single `:`.
fn is_grouped(characters: &[char]) -> bool {
    characters
        .iter()
        .enumerate()
        .all(|(index, c)| (*c == ':') == (index % 5 == 4))
}

/// The host's `CPUID`, as a function of (leaf, subleaf) returning
/// `[eax, ebx, ecx, edx]`.
pub type HostCpuid<'a> = &'a dyn Fn(u32, u32) -> [u32; 4];

/// The CPU vendor named by leaf 0's registers (stored EBX, EDX, ECX).
pub fn vendor_string(ebx: u32, ecx: u32, edx: u32) -> String {
    register_text(&[ebx, edx, ecx])
}

/// The hypervisor signature named by leaf 0x4000_0000's registers (stored
/// EBX, ECX, EDX).
pub fn hypervisor_signature(ebx: u32, ecx: u32, edx: u32) -> String {
    register_text(&[ebx, ecx, edx])
}

/// The text stored little-endian in `registers`, without trailing NULs.
pub fn register_text(registers: &[u32]) -> String {
    let bytes: Vec<u8> = registers.iter().flat_map(|r| r.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_string()
}

fn text_registers<const N: usize>(text: &str) -> [u32; N] {
    let mut bytes = vec![0u8; N * 4];
    let length = text.len().min(bytes.len());
    bytes[..length].copy_from_slice(&text.as_bytes()[..length]);
    let mut registers = [0u32; N];
    for (register, chunk) in registers.iter_mut().zip(bytes.chunks(4)) {
        *register = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    registers
}

/// The guest's CPU: the values its `CPUID` returns and its TSC frequency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuModel {
    leaves: BTreeMap<u32, [u32; 4]>,
    tsc_hz: u64,
}

/// Sets `feature`'s bit in `leaves`.
fn offer(leaves: &mut BTreeMap<u32, [u32; 4]>, feature: Feature) {
    let values = leaves.entry(feature.leaf).or_insert([0; 4]);
    values[feature.register.index()] |= 1 << feature.bit;
}

impl CpuModel {
    /// Builds the model for `config`, consulting `host` for `H`/`R` masks,
    /// the host's vendor (for vendor-specific masks) and the TSC frequency
    /// ([`FALLBACK_TSC_HZ`] when the host does not report it).
    pub fn new(config: &VmConfig, host: HostCpuid<'_>) -> Result<CpuModel, CpuidError> {
        Self::new_measuring(config, host, || None)
    }

    /// As [`Self::new`], with `measure` asked for the TSC frequency when
    /// the host's CPUID does not report it (the guest's TSC is the host's,
    /// so its clock runs right only with the host's frequency).
    pub fn new_measuring(
        config: &VmConfig,
        host: HostCpuid<'_>,
        measure: impl FnOnce() -> Option<u64>,
    ) -> Result<CpuModel, CpuidError> {
        let tsc_hz = host_tsc_hz(host)
            .or_else(measure)
            .unwrap_or(FALLBACK_TSC_HZ);
        let mut leaves = default_leaves(config.hypervisor_cpuid_v0, tsc_hz);
        offer_host_dependent_features(&mut leaves, host);
        if config.apic {
            offer(&mut leaves, APIC);
        }
        let host_vendor = host_mask_vendor(host);
        let applicable =
            config
                .cpuid_masks
                .iter()
                .filter(|mask| mask.vendor == MaskVendor::Any)
                .chain(config.cpuid_masks.iter().filter(|mask| {
                    mask.vendor != MaskVendor::Any && Some(mask.vendor) == host_vendor
                }));
        for mask in applicable {
            apply_mask(&mut leaves, mask, host)?;
        }
        if let Some(extended) = leaves.get_mut(&LM.leaf) {
            extended[LM.register.index()] &= !(1 << LM.bit);
        }
        Ok(CpuModel { leaves, tsc_hz })
    }

    /// The model for a 64-bit kernel under hardware execution: the same
    /// processor offering PAE and long mode (leaf 0x8000_0001 EDX bit 29),
    /// which such a kernel checks before it switches (binary translation
    /// never gets this model: it runs 32-bit guests only).
    pub fn with_long_mode(&self) -> CpuModel {
        let mut model = self.clone();
        for feature in [PAE, LM] {
            offer(&mut model.leaves, feature);
        }
        if let Some(max) = model.leaves.get_mut(&0x8000_0000) {
            max[0] = max[0].max(LM.leaf);
        }
        model
    }

    /// What `CPUID` returns for `leaf`/`subleaf`: `[eax, ebx, ecx, edx]`.
    ///
    /// No leaf of the model has subleaves, so `subleaf` does not change the
    /// answer.
    pub fn query(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let _ = subleaf;
        match self.leaves.get(&leaf) {
            Some(values) => *values,
            None => self.leaves[&MAX_BASIC_LEAF],
        }
    }

    /// Every answer of [`Self::query`], for translated code to answer CPUID
    /// without an exit: leaves 1 and 0 first (what guests ask most), then
    /// the rest in order; any other leaf gets the highest basic leaf's.
    pub fn cpuid_answers(&self) -> translator::CpuidAnswers {
        let mut leaves: Vec<(u32, [u32; 4])> = self.leaves.iter().map(|(l, v)| (*l, *v)).collect();
        leaves.sort_by_key(|(leaf, _)| (!matches!(leaf, 0 | 1), *leaf != 1, *leaf));
        translator::CpuidAnswers {
            leaves,
            otherwise: self.leaves[&MAX_BASIC_LEAF],
        }
    }

    /// The guest's TSC frequency in Hz (also reported in leaf 0x4000_0010).
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// True if the model offers `feature`.
    pub fn offers(&self, feature: Feature) -> bool {
        self.bit_set(feature.leaf, feature.register, feature.bit)
    }

    fn bit_set(&self, leaf: u32, register: Register, bit: u8) -> bool {
        self.leaves
            .get(&leaf)
            .is_some_and(|values| values[register.index()] >> bit & 1 == 1)
    }

    /// The CR4 bits this CPU has: TSD and PCE always, PSE, PGE and DE with
    /// their CPUID bits, OSFXSR with FXSR, OSXMMEXCPT with SSE (SDM vol. 3,
    /// 2.5). Writing any other bit is #GP(0).
    pub fn cr4_bits(&self) -> crate::cpu::Cr4 {
        use crate::cpu::Cr4;
        let mut bits = Cr4::TSD | Cr4::PCE;
        for (feature, bit) in [
            (DE, Cr4::DE),
            (PSE, Cr4::PSE),
            (PGE, Cr4::PGE),
            (FXSR, Cr4::OSFXSR),
            (SSE, Cr4::OSXMMEXCPT),
        ] {
            if self.offers(feature) {
                bits |= bit;
            }
        }
        bits
    }

    /// The instruction-set extensions the guest may use: those whose CPUID
    /// bits the model sets. Instructions of any other extension raise #UD.
    pub fn guest_isa(&self) -> GuestIsa {
        let features: Vec<CpuidFeature> = ISA_BITS
            .iter()
            .filter(|b| b.offerable() && self.bit_set(b.leaf, b.register, b.bit))
            .flat_map(|b| b.features.iter().copied())
            .collect();
        // Every feature was filtered through `can_offer`.
        GuestIsa::with(&features).unwrap_or_default()
    }
}

fn apply_mask(
    leaves: &mut BTreeMap<u32, [u32; 4]>,
    mask: &CpuidMask,
    host: HostCpuid<'_>,
) -> Result<(), CpuidError> {
    if mask.leaf == LM.leaf && mask.register == LM.register && mask.forces_set(LM.bit) {
        return Err(CpuidError::LongModeRefused {
            key: mask.key.clone(),
        });
    }
    let values = leaves
        .get_mut(&mask.leaf)
        .ok_or_else(|| CpuidError::LeafNotOffered {
            key: mask.key.clone(),
            leaf: mask.leaf,
        })?;
    let index = mask.register.index();
    let host_value = host(mask.leaf, 0)[index];
    values[index] = mask.apply(values[index], host_value)?;
    values[index] = drop_unimplemented_extensions(mask, values[index])?;
    Ok(())
}

/// Extension bits the translator cannot offer: refused when the mask forces
/// them to 1, cleared when it copies them from the host (as long mode).
fn drop_unimplemented_extensions(mask: &CpuidMask, mut value: u32) -> Result<u32, CpuidError> {
    let unimplemented = ISA_BITS
        .iter()
        .filter(|b| b.leaf == mask.leaf && b.register == mask.register && !b.offerable());
    for b in unimplemented {
        if mask.forces_set(b.bit) {
            return Err(CpuidError::ExtensionRefused {
                key: mask.key.clone(),
                bit: b.bit,
                name: b.name,
            });
        }
        value &= !(1 << b.bit);
    }
    Ok(value)
}

fn host_mask_vendor(host: HostCpuid<'_>) -> Option<MaskVendor> {
    let [_, ebx, ecx, edx] = host(0, 0);
    match vendor_string(ebx, ecx, edx).as_str() {
        "GenuineIntel" => Some(MaskVendor::Intel),
        "AuthenticAMD" => Some(MaskVendor::Amd),
        _ => None,
    }
}

/// The host TSC frequency if the host reports it through `CPUID`: the
/// outer hypervisor's timing leaf, then leaf 0x15, then leaf 0x16.
fn host_tsc_hz(host: HostCpuid<'_>) -> Option<u64> {
    let hypervisor_present = host(1, 0)[2] >> HYPERVISOR.bit & 1 == 1;
    if hypervisor_present && host(HYPERVISOR_VENDOR_LEAF, 0)[0] >= HYPERVISOR_TIMING_LEAF {
        let khz = host(HYPERVISOR_TIMING_LEAF, 0)[0];
        if khz != 0 {
            return Some(u64::from(khz) * 1000);
        }
    }
    let max_basic = host(0, 0)[0];
    if max_basic >= 0x15 {
        let [denominator, numerator, crystal_hz, _] = host(0x15, 0);
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            return Some(u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator));
        }
    }
    if max_basic >= 0x16 {
        let base_mhz = host(0x16, 0)[0] & 0xFFFF;
        if base_mhz != 0 {
            return Some(u64::from(base_mhz) * 1_000_000);
        }
    }
    None
}

fn offer_host_dependent_features(leaves: &mut BTreeMap<u32, [u32; 4]>, host: HostCpuid<'_>) {
    for feature in HOST_DEPENDENT_FEATURES {
        let host_has = host(feature.leaf, 0)[feature.register.index()] >> feature.bit & 1 == 1;
        if let (true, Some(values)) = (host_has, leaves.get_mut(&feature.leaf)) {
            values[feature.register.index()] |= 1 << feature.bit;
        }
    }
}

fn feature_bits(leaf: u32, register: Register) -> u32 {
    GUEST_FEATURES
        .iter()
        .filter(|feature| feature.leaf == leaf && feature.register == register)
        .fold(0, |bits, feature| bits | 1 << feature.bit)
}

fn default_leaves(hypervisor_leaves: bool, tsc_hz: u64) -> BTreeMap<u32, [u32; 4]> {
    let mut leaves = BTreeMap::new();
    let [vendor_ebx, vendor_edx, vendor_ecx] = text_registers::<3>(VENDOR);
    leaves.insert(0, [MAX_BASIC_LEAF, vendor_ebx, vendor_ecx, vendor_edx]);
    let signature = STEPPING | MODEL << 4 | FAMILY << 8;
    let hypervisor_bit = if hypervisor_leaves {
        1 << HYPERVISOR.bit
    } else {
        0
    };
    leaves.insert(
        1,
        [
            signature,
            0,
            feature_bits(1, Register::Ecx) | hypervisor_bit,
            feature_bits(1, Register::Edx),
        ],
    );
    // Leaf 2: AL = 1 (one call suffices), no cache descriptors.
    leaves.insert(2, [1, 0, 0, 0]);
    leaves.insert(0x8000_0000, [MAX_EXTENDED_LEAF, 0, 0, 0]);
    leaves.insert(
        0x8000_0001,
        [
            0,
            0,
            feature_bits(0x8000_0001, Register::Ecx),
            feature_bits(0x8000_0001, Register::Edx),
        ],
    );
    let brand = text_registers::<12>(BRAND);
    for (index, chunk) in brand.chunks(4).enumerate() {
        leaves.insert(
            0x8000_0002 + index as u32,
            [chunk[0], chunk[1], chunk[2], chunk[3]],
        );
    }
    if hypervisor_leaves {
        let [sig_ebx, sig_ecx, sig_edx] = text_registers::<3>(HYPERVISOR_SIGNATURE);
        leaves.insert(
            HYPERVISOR_VENDOR_LEAF,
            [HYPERVISOR_TIMING_LEAF, sig_ebx, sig_ecx, sig_edx],
        );
        for leaf in HYPERVISOR_VENDOR_LEAF + 1..HYPERVISOR_TIMING_LEAF {
            leaves.insert(leaf, [0; 4]);
        }
        let tsc_khz = u32::try_from(tsc_hz / 1000).unwrap_or(u32::MAX);
        let bus_khz = (BUS_HZ / 1000) as u32;
        leaves.insert(HYPERVISOR_TIMING_LEAF, [tsc_khz, bus_khz, 0, 0]);
    }
    leaves
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_TSC_KHZ: u32 = 2_500_000;

    /// An AMD host under KVM with every feature bit set and a timing leaf.
    fn amd_host(leaf: u32, _subleaf: u32) -> [u32; 4] {
        let [ebx, edx, ecx] = text_registers::<3>("AuthenticAMD");
        match leaf {
            0 => [0x10, ebx, ecx, edx],
            1 => [0x00A1_0F11, 0, 0xFFFF_FFFF, 0xFFFF_FFFF],
            0x4000_0000 => [0x4000_0010, 0, 0, 0],
            0x4000_0010 => [HOST_TSC_KHZ, 1_000_000, 0, 0],
            0x8000_0001 => [0, 0, 0xFFFF_FFFF, 0xFFFF_FFFF],
            _ => [0; 4],
        }
    }

    /// An Intel host with no feature bits and no hypervisor.
    fn bare_intel_host(leaf: u32, _subleaf: u32) -> [u32; 4] {
        let [ebx, edx, ecx] = text_registers::<3>("GenuineIntel");
        match leaf {
            0 => [0x1, ebx, ecx, edx],
            _ => [0; 4],
        }
    }

    fn config_with_masks(masks: &[(&str, &str)]) -> VmConfig {
        VmConfig {
            cpuid_masks: masks
                .iter()
                .map(|(key, value)| CpuidMask::parse(key, value).unwrap())
                .collect(),
            ..VmConfig::default()
        }
    }

    fn model(masks: &[(&str, &str)]) -> CpuModel {
        CpuModel::new(&config_with_masks(masks), &amd_host).unwrap()
    }

    #[test]
    fn inline_answers_agree_with_query_for_every_leaf_and_put_leaf_1_first() {
        let model = model(&[]);
        let answers = model.cpuid_answers();
        assert_eq!(answers.leaves[0].0, 1);
        assert_eq!(answers.leaves[1].0, 0);
        let answer = |leaf: u32| {
            answers
                .leaves
                .iter()
                .find(|(l, _)| *l == leaf)
                .map_or(answers.otherwise, |(_, v)| *v)
        };
        let samples = (0..0x40)
            .chain(0x4000_0000..0x4000_0020)
            .chain(0x8000_0000..0x8000_0020)
            .chain([0x0bad_cafe, u32::MAX]);
        for leaf in samples {
            assert_eq!(answer(leaf), model.query(leaf, 0), "leaf {leaf:#x}");
        }
    }

    #[test]
    fn default_model_is_genuine_intel_family_6() {
        let model = model(&[]);
        let [max, ebx, ecx, edx] = model.query(0, 0);
        assert_eq!(max, MAX_BASIC_LEAF);
        assert_eq!(vendor_string(ebx, ecx, edx), "GenuineIntel");
        let signature = model.query(1, 0)[0];
        assert_eq!((signature >> 8) & 0xF, 6);
        assert_eq!((signature >> 4) & 0xF, 13);
        assert_eq!(signature & 0xF, 8);
    }

    #[test]
    fn brand_string_spans_the_three_brand_leaves() {
        let model = model(&[]);
        let registers: Vec<u32> = (0x8000_0002..=0x8000_0004)
            .flat_map(|leaf| model.query(leaf, 0))
            .collect();
        assert_eq!(register_text(&registers), BRAND);
        assert_eq!(model.query(0x8000_0000, 0)[0], MAX_EXTENDED_LEAF);
    }

    #[test]
    fn offered_features_are_exactly_the_supported_list() {
        let model = model(&[]);
        assert_eq!(model.query(1, 0)[3], 0x0781_ab3d);
        for feature in GUEST_FEATURES.iter().chain([&APIC]) {
            assert!(model.offers(*feature), "{} missing", feature.name);
        }
        assert!(!model.offers(LM), "long mode offered");
    }

    #[test]
    fn the_apic_bit_follows_the_machine_having_an_apic() {
        let mut config = config_with_masks(&[]);
        config.apic = false;
        let model = CpuModel::new(&config, &amd_host).unwrap();
        assert!(!model.offers(APIC));
        assert_eq!(model.query(1, 0)[3], 0x0781_a93d);
    }

    #[test]
    fn hypervisor_leaves_report_vmware_and_timing_by_default() {
        let model = model(&[]);
        assert!(model.offers(HYPERVISOR));
        let [max, ebx, ecx, edx] = model.query(HYPERVISOR_VENDOR_LEAF, 0);
        assert_eq!(max, HYPERVISOR_TIMING_LEAF);
        assert_eq!(hypervisor_signature(ebx, ecx, edx), "VMwareVMware");
        let [tsc_khz, bus_khz, _, _] = model.query(HYPERVISOR_TIMING_LEAF, 0);
        assert_eq!(tsc_khz, HOST_TSC_KHZ);
        assert_eq!(u64::from(bus_khz), BUS_HZ / 1000);
        assert_eq!(model.tsc_hz(), u64::from(HOST_TSC_KHZ) * 1000);
    }

    #[test]
    fn hypervisor_cpuid_v0_false_hides_bit_and_leaves() {
        let config = VmConfig {
            hypervisor_cpuid_v0: false,
            ..VmConfig::default()
        };
        let model = CpuModel::new(&config, &amd_host).unwrap();
        assert!(!model.offers(HYPERVISOR));
        assert_eq!(
            model.query(HYPERVISOR_VENDOR_LEAF, 0),
            model.query(MAX_BASIC_LEAF, 0)
        );
        assert_eq!(
            model.query(HYPERVISOR_TIMING_LEAF, 0),
            model.query(MAX_BASIC_LEAF, 0)
        );
    }

    #[test]
    fn leaves_past_the_maximum_return_the_highest_basic_leaf() {
        let model = model(&[]);
        assert_eq!(model.query(7, 0), model.query(MAX_BASIC_LEAF, 0));
        assert_eq!(model.query(0x8000_0008, 0), model.query(MAX_BASIC_LEAF, 0));
    }

    #[test]
    fn tsc_is_measured_when_the_host_does_not_report_it() {
        let measured = CpuModel::new_measuring(&VmConfig::default(), &bare_intel_host, || {
            Some(2_445_123_000)
        })
        .unwrap();
        assert_eq!(measured.tsc_hz(), 2_445_123_000);
        assert_eq!(measured.query(HYPERVISOR_TIMING_LEAF, 0)[0], 2_445_123);
        let reported = CpuModel::new_measuring(&VmConfig::default(), &amd_host, || {
            panic!("no measurement when the host reports its TSC frequency")
        })
        .unwrap();
        assert_eq!(reported.tsc_hz(), u64::from(HOST_TSC_KHZ) * 1000);
    }

    #[test]
    fn tsc_falls_back_when_host_does_not_report_it() {
        let model = CpuModel::new(&VmConfig::default(), &bare_intel_host).unwrap();
        assert_eq!(model.tsc_hz(), FALLBACK_TSC_HZ);
        assert_eq!(
            u64::from(model.query(HYPERVISOR_TIMING_LEAF, 0)[0]),
            FALLBACK_TSC_HZ / 1000
        );
    }

    #[test]
    fn mask_zero_and_one_force_bits() {
        let model = model(&[("cpuid.1.edx", "0000:0000:0000:0000:0000:----:0000:1--0")]);
        let edx = model.query(1, 0)[3];
        assert_eq!(edx >> 3 & 1, 1, "bit 3 forced on");
        assert_eq!(edx & 1, 0, "bit 0 forced off");
        assert_eq!(edx >> 26, 0, "upper bits forced off");
        assert_eq!(edx >> 8 & 1, 1, "dash keeps CX8");
    }

    #[test]
    fn mask_without_separators_is_accepted() {
        let model = model(&[("cpuid.1.ecx", "0-------------------------------")]);
        assert!(!model.offers(HYPERVISOR));
    }

    #[test]
    fn mask_h_copies_the_host_bit() {
        let model = model(&[("cpuid.1.ecx", "----:----:----:----:----:----:----:---H")]);
        assert_eq!(model.query(1, 0)[2] & 1, 1);
        let lower = model_with_host(
            &[("cpuid.1.ecx", "----:----:----:----:----:----:----:---h")],
            &bare_intel_host,
        );
        assert_eq!(lower.query(1, 0)[2] & 1, 0);
    }

    fn model_with_host(masks: &[(&str, &str)], host: HostCpuid<'_>) -> CpuModel {
        CpuModel::new(&config_with_masks(masks), host).unwrap()
    }

    #[test]
    fn host_dependent_extensions_are_offered_only_where_the_host_has_them() {
        let rich = model(&[]);
        let bare = model_with_host(&[], &bare_intel_host);
        for feature in HOST_DEPENDENT_FEATURES {
            assert!(rich.offers(*feature), "{} missing", feature.name);
            assert!(!bare.offers(*feature), "{} offered", feature.name);
        }
    }

    #[test]
    fn mask_forcing_an_untranslatable_extension_is_refused() {
        let config =
            config_with_masks(&[("cpuid.1.ecx", "---1:----:----:----:----:----:----:----")]);
        let error = CpuModel::new(&config, &amd_host).unwrap_err();
        assert_eq!(
            error,
            CpuidError::ExtensionRefused {
                key: "cpuid.1.ecx".into(),
                bit: 28,
                name: "avx"
            }
        );
        assert!(error.to_string().contains("avx"), "{error}");
    }

    #[test]
    fn mask_copying_an_untranslatable_extension_from_the_host_clears_it() {
        let model = model(&[("cpuid.1.ecx", "HHHH:HHHH:HHHH:HHHH:HHHH:HHHH:HHHH:HHHH")]);
        let ecx = model.query(1, 0)[2];
        assert_eq!(ecx >> 28 & 1, 0, "avx");
        assert_eq!(ecx >> 26 & 1, 0, "xsave");
        assert_eq!(ecx >> 19 & 1, 1, "sse4_1 stays");
    }

    #[test]
    fn guest_instruction_set_follows_the_offered_bits() {
        let isa = model(&[]).guest_isa();
        assert!(isa.offers(CpuidFeature::SSE2));
        assert!(isa.offers(CpuidFeature::SSE4_2));
        assert!(!isa.offers(CpuidFeature::AVX));
        let no_sse = model(&[("cpuid.1.edx", "----:-00-:----:----:----:----:----:----")]);
        let isa = no_sse.guest_isa();
        assert!(!isa.offers(CpuidFeature::SSE) && !isa.offers(CpuidFeature::SSE2));
        assert!(isa.offers(CpuidFeature::MMX));
    }

    #[test]
    fn mask_r_requires_the_host_bit_set() {
        let masks = [("cpuid.1.ecx", "----:----:----:----:----:----:----:---R")];
        assert_eq!(model(&masks).query(1, 0)[2] & 1, 1);
        let error = CpuModel::new(&config_with_masks(&masks), &bare_intel_host).unwrap_err();
        assert_eq!(
            error,
            CpuidError::RequirementNotMet {
                key: "cpuid.1.ecx".into(),
                bit: 0,
                required: 1,
                actual: 0
            }
        );
    }

    #[test]
    fn mask_lowercase_r_requires_the_host_bit_clear() {
        let masks = [("cpuid.1.edx", "----:----:----:----:----:----:----:---r")];
        let model = model_with_host(&masks, &bare_intel_host);
        assert!(!model.offers(FPU));
        let error = CpuModel::new(&config_with_masks(&masks), &amd_host).unwrap_err();
        assert!(matches!(
            error,
            CpuidError::RequirementNotMet {
                required: 0,
                actual: 1,
                ..
            }
        ));
    }

    #[test]
    fn vendor_mask_applies_only_on_that_vendor_after_the_neutral_one() {
        let masks = [
            ("cpuid.1.edx.amd", "----:----:----:----:----:----:----:1---"),
            ("cpuid.1.edx", "----:----:----:----:----:----:----:0---"),
            (
                "cpuid.1.edx.intel",
                "----:----:----:----:----:----:----:---0",
            ),
        ];
        let on_amd = model(&masks);
        assert!(on_amd.offers(PSE), "amd mask wins over neutral on AMD");
        assert!(on_amd.offers(FPU), "intel mask ignored on AMD");
        let on_intel = model_with_host(&masks, &bare_intel_host);
        assert!(!on_intel.offers(PSE));
        assert!(!on_intel.offers(FPU));
    }

    #[test]
    fn long_mode_cannot_be_forced_on() {
        let config = config_with_masks(&[(
            "cpuid.80000001.edx",
            "--1-:----:----:----:----:----:----:----",
        )]);
        let error = CpuModel::new(&config, &amd_host).unwrap_err();
        assert!(matches!(error, CpuidError::LongModeRefused { .. }));
    }

    #[test]
    fn long_mode_copied_from_host_is_cleared() {
        let model = model(&[(
            "cpuid.80000001.edx",
            "HHHH:HHHH:HHHH:HHHH:HHHH:HHHH:HHHH:HHHH",
        )]);
        assert!(!model.offers(LM));
        let long = model.with_long_mode();
        assert!(long.offers(LM) && long.offers(PAE));
        assert!(long.query(0x8000_0000, 0)[0] >= 0x8000_0001);
        // Long mode and the extensions binary translation does not run
        // (SYSCALL, RDTSCP, 3DNow!, 3DNow! extensions) are cleared.
        let cleared = 1u32 << 29 | 1 << 11 | 1 << 27 | 1 << 30 | 1 << 31;
        assert_eq!(model.query(0x8000_0001, 0)[3], !cleared);
    }

    #[test]
    fn mask_for_a_leaf_not_offered_is_refused() {
        let config = config_with_masks(&[("cpuid.7.ebx", "--------------------------------")]);
        let error = CpuModel::new(&config, &amd_host).unwrap_err();
        assert_eq!(
            error,
            CpuidError::LeafNotOffered {
                key: "cpuid.7.ebx".into(),
                leaf: 7
            }
        );
    }

    #[test]
    fn mask_key_with_a_signed_leaf_is_refused() {
        assert!(matches!(
            CpuidMask::parse("cpuid.+1.eax", "--------------------------------"),
            Err(CpuidError::BadKey { .. })
        ));
    }

    #[test]
    fn mask_with_wrong_length_names_the_key() {
        let error = CpuidMask::parse("cpuid.1.ecx", "----").unwrap_err();
        assert!(matches!(error, CpuidError::BadLength { length: 4, .. }));
        assert!(error.to_string().starts_with("cpuid.1.ecx:"));
        let misplaced = CpuidMask::parse("cpuid.1.ecx", "-----:---:----:----:----:----:----:----");
        assert!(matches!(
            misplaced,
            Err(CpuidError::BadLength { length: 39, .. })
        ));
    }

    #[test]
    fn mask_with_unknown_character_names_key_and_bit() {
        let error =
            CpuidMask::parse("cpuid.1.ecx", "x---:----:----:----:----:----:----:----").unwrap_err();
        assert_eq!(
            error,
            CpuidError::BadCharacter {
                key: "cpuid.1.ecx".into(),
                character: 'x',
                bit: 31
            }
        );
    }

    #[test]
    fn mask_keys_parse_hex_leaves_registers_and_vendors() {
        let mask = CpuidMask::parse("CPUID.80000001.ECX.Intel", &"-".repeat(32)).unwrap();
        assert_eq!(mask.leaf, 0x8000_0001);
        assert_eq!(mask.register, Register::Ecx);
        assert_eq!(mask.vendor, MaskVendor::Intel);
        for bad in [
            "cpuid.1",
            "cpuid.1.exx",
            "cpuid.g.eax",
            "cpuid.1.eax.via",
            "cpuid.123456789.eax",
        ] {
            assert!(
                matches!(
                    CpuidMask::parse(bad, &"-".repeat(32)),
                    Err(CpuidError::BadKey { .. })
                ),
                "{bad} accepted"
            );
        }
    }
}
