//! The system instructions as functions on the operand values the vCPU
//! decoded (Intel SDM vol. 2, the instruction pages; vol. 3, chapters 2,
//! 3, 5, 16 and 17).
//!
//! - [`tables`]: LGDT, LIDT, SGDT, SIDT, LLDT, SLDT, LTR, STR, LAR, LSL,
//!   VERR, VERW, ARPL;
//! - [`control`]: MOV to and from CR0, CR2, CR3, CR4, SMSW, LMSW, CLTS;
//! - [`debug`]: MOV to and from DR0-DR7;
//! - [`io`]: the I/O permission of IN, OUT, INS and OUTS;
//! - [`eflags`]: CLI, STI, POPF, PUSHF;
//! - [`privileged`]: the CPL 0 rule, RDMSR, WRMSR, RDTSC, RDPMC;
//! - [`sysenter`]: SYSENTER and SYSEXIT;
//! - [`fpu`]: when x87, MMX, SSE and FXSAVE instructions raise #NM or #UD.
//!
//! Invariants:
//! - a function that fails changes nothing (no register, no memory);
//! - what the vCPU must act on after a change (flushing translations,
//!   re-arming breakpoints, FPU state) is returned as [`Changed`], never
//!   done here;
//! - virtual-8086 mode and real mode are not modelled (clearing CR0.PE is
//!   [`super::Fault::Unsupported`]); only the EFLAGS.VM rules of the
//!   IOPL-sensitive instructions are kept, as the SDM gives them.

use bitflags::bitflags;

pub mod control;
pub mod debug;
pub mod eflags;
pub mod fpu;
pub mod io;
pub mod privileged;
pub mod sysenter;
pub mod tables;

pub use control::{clts, lmsw, mov_from_cr, mov_to_cr, smsw, CR4_P6};
pub use debug::{mov_from_dr, mov_to_dr};
pub use eflags::{cli, popf, pushf, sti};
pub use fpu::{fpu_available, simd_exception, FpuKind};
pub use io::io_allowed;
pub use privileged::{rdmsr, rdpmc, rdtsc, require_cpl0, wrmsr};
pub use sysenter::{sysenter, sysexit};
pub use tables::{arpl, lar, lgdt, lidt, lldt, lsl, ltr, sgdt, sidt, sldt, str, verr, verw};

bitflags! {
    /// What an instruction changed that the vCPU must act on.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Changed: u32 {
        /// The paging mode or the meaning of page-table entries (CR0.PG;
        /// with paging on, CR0.WP, CR4.PSE, CR4.PGE, CR4.PAE): every
        /// cached translation, global ones too, is stale.
        const PAGING = 1 << 0;
        /// CR3 was loaded with paging on: non-global translations are
        /// stale (a MOV to CR3 flushes the TLB even with the same value).
        const ADDRESS_SPACE = 1 << 1;
        /// The FPU controls: CR0.TS, EM, MP, NE, CR4.OSFXSR, OSXMMEXCPT.
        const FPU = 1 << 2;
        /// CR0.PE (protection enable).
        const PROTECTION = 1 << 3;
        /// CR0.AM (alignment checks at CPL 3 with EFLAGS.AC).
        const ALIGNMENT = 1 << 4;
        /// CR0.CD or NW (caching; nothing to emulate, for a backend that
        /// mirrors them).
        const CACHE = 1 << 5;
        /// CR4.TSD, PCE, DE, MCE, VME, PVI: rules this module applies at
        /// every instruction, which a backend running such instructions
        /// natively must re-read.
        const CONTROLS = 1 << 6;
        /// DR0-DR3 or DR7: the armed breakpoints.
        const BREAKPOINTS = 1 << 7;
    }
}
