//! The nestmon binary translator: 32-bit x86 guest code to x86-64 host code.
//!
//! Register convention while translated code runs (see
//! docs/ARCHITECTURE.md): guest EAX, ECX, EDX, EBX, EBP, ESI, EDI in the host
//! registers of the same number (upper halves zero), guest ESP in R8, guest
//! arithmetic flags and DF in host RFLAGS, guest x87/MMX/SSE state in the
//! host's; R14 points at the [`CpuState`], R15 at the guest's linear window;
//! R9-R13 are scratch; host RSP is the monitor's stack.

pub mod confine;
pub mod emit;
pub mod ibtc;
pub mod isa;
pub mod listing;
pub mod rstack;
pub mod runtime;
pub mod sampler;
pub mod state;
pub mod translate;
pub mod verify;

pub use isa::{fpu_class, Availability, FpuClass, GuestIsa};
pub use runtime::Stubs;
pub use state::{CpuState, ExitReason, Seg};
pub use translate::{translate, CpuidAnswers, Mode, PcThunk, Unit, UnitRequest};

/// Why a unit could not be translated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TranslateError {
    /// The host encoder refused an instruction (a translator bug).
    #[error("cannot encode host code: {0}")]
    Encode(String),
    /// A guest instruction form the translator does not handle.
    #[error("unsupported guest instruction form: {0}")]
    Unsupported(&'static str),
    /// The emitted code failed the confinement check (a translator bug;
    /// the unit is refused rather than run).
    #[error(transparent)]
    Confinement(#[from] verify::Violation),
}
