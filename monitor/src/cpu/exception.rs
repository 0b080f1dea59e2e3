//! Exceptions and the other events delivered through the IDT (Intel SDM
//! vol. 3, 6.3-6.15), with their vectors, error codes and classes.

/// A processor exception, with the error code the processor pushes.
///
/// Selector error codes are built with [`selector_error`] and friends, so
/// the EXT, IDT and TI bits are right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #DE, vector 0: divide error.
    DivideError,
    /// #DB, vector 1: debug (a trap or a fault, by cause).
    Debug,
    /// #BP, vector 3: INT3 (a trap).
    Breakpoint,
    /// #OF, vector 4: INTO with OF set (a trap).
    Overflow,
    /// #BR, vector 5: BOUND range exceeded.
    BoundRange,
    /// #UD, vector 6: invalid opcode.
    InvalidOpcode,
    /// #NM, vector 7: device (FPU) not available.
    DeviceNotAvailable,
    /// #DF, vector 8: double fault (error code 0).
    DoubleFault,
    /// #TS, vector 10: invalid TSS.
    InvalidTss(u32),
    /// #NP, vector 11: segment not present.
    SegmentNotPresent(u32),
    /// #SS, vector 12: stack-segment fault.
    StackFault(u32),
    /// #GP, vector 13: general protection.
    GeneralProtection(u32),
    /// #PF, vector 14: page fault at `addr` (loaded into CR2).
    PageFault {
        /// The linear address (CR2).
        addr: u32,
        /// P, W/R, U/S, RSVD, I/D bits.
        error: u32,
    },
    /// #MF, vector 16: x87 floating-point error.
    FloatingPoint,
    /// #AC, vector 17: alignment check (error code 0).
    AlignmentCheck,
    /// #MC, vector 18: machine check.
    MachineCheck,
    /// #XM, vector 19: SIMD floating-point exception.
    SimdFloatingPoint,
}

/// Why an instruction or an event delivery could not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An exception to deliver through the IDT.
    Exception(Exception),
    /// A triple fault: the processor shuts down.
    TripleFault,
    /// The guest asked for something this CPU model does not implement
    /// (named); the vCPU stops with a report rather than pretend.
    Unsupported(&'static str),
}

impl From<Exception> for Fault {
    fn from(e: Exception) -> Fault {
        Fault::Exception(e)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Exception(e) => write!(f, "{e}"),
            Fault::TripleFault => write!(f, "triple fault (shutdown)"),
            Fault::Unsupported(what) => write!(f, "{what} is not supported"),
        }
    }
}

/// How an exception combines with one raised while delivering it (SDM vol.
/// 3, table 6-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Delivered in turn (#DB, #NMI, #BP, #OF, #BR, #UD, #NM, #MF, #AC,
    /// #MC, #XM, interrupts).
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    /// #PF.
    PageFault,
    /// #DF itself: a further exception is a triple fault (shutdown).
    DoubleFault,
}

impl Exception {
    /// The IDT vector.
    pub fn vector(self) -> u8 {
        match self {
            Exception::DivideError => 0,
            Exception::Debug => 1,
            Exception::Breakpoint => 3,
            Exception::Overflow => 4,
            Exception::BoundRange => 5,
            Exception::InvalidOpcode => 6,
            Exception::DeviceNotAvailable => 7,
            Exception::DoubleFault => 8,
            Exception::InvalidTss(_) => 10,
            Exception::SegmentNotPresent(_) => 11,
            Exception::StackFault(_) => 12,
            Exception::GeneralProtection(_) => 13,
            Exception::PageFault { .. } => 14,
            Exception::FloatingPoint => 16,
            Exception::AlignmentCheck => 17,
            Exception::MachineCheck => 18,
            Exception::SimdFloatingPoint => 19,
        }
    }

    /// The error code the processor pushes, if it pushes one.
    pub fn error_code(self) -> Option<u32> {
        match self {
            Exception::DoubleFault | Exception::AlignmentCheck => Some(0),
            Exception::InvalidTss(e)
            | Exception::SegmentNotPresent(e)
            | Exception::StackFault(e)
            | Exception::GeneralProtection(e) => Some(e),
            Exception::PageFault { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Its class for double-fault detection.
    pub fn class(self) -> Class {
        match self {
            Exception::DivideError
            | Exception::InvalidTss(_)
            | Exception::SegmentNotPresent(_)
            | Exception::StackFault(_)
            | Exception::GeneralProtection(_) => Class::Contributory,
            Exception::PageFault { .. } => Class::PageFault,
            Exception::DoubleFault => Class::DoubleFault,
            _ => Class::Benign,
        }
    }

    /// Whether the saved EIP points after the instruction (a trap) rather
    /// than at it (a fault). #DB is classified by its cause, not here.
    pub fn is_trap(self) -> bool {
        matches!(self, Exception::Breakpoint | Exception::Overflow)
    }

    /// The exception's mnemonic, as the SDM writes it.
    pub fn mnemonic(self) -> &'static str {
        match self {
            Exception::DivideError => "#DE",
            Exception::Debug => "#DB",
            Exception::Breakpoint => "#BP",
            Exception::Overflow => "#OF",
            Exception::BoundRange => "#BR",
            Exception::InvalidOpcode => "#UD",
            Exception::DeviceNotAvailable => "#NM",
            Exception::DoubleFault => "#DF",
            Exception::InvalidTss(_) => "#TS",
            Exception::SegmentNotPresent(_) => "#NP",
            Exception::StackFault(_) => "#SS",
            Exception::GeneralProtection(_) => "#GP",
            Exception::PageFault { .. } => "#PF",
            Exception::FloatingPoint => "#MF",
            Exception::AlignmentCheck => "#AC",
            Exception::MachineCheck => "#MC",
            Exception::SimdFloatingPoint => "#XM",
        }
    }

    /// The exception's name.
    pub fn name(self) -> &'static str {
        match self {
            Exception::DivideError => "divide error",
            Exception::Debug => "debug",
            Exception::Breakpoint => "breakpoint",
            Exception::Overflow => "overflow",
            Exception::BoundRange => "bound range exceeded",
            Exception::InvalidOpcode => "invalid opcode",
            Exception::DeviceNotAvailable => "device not available",
            Exception::DoubleFault => "double fault",
            Exception::InvalidTss(_) => "invalid TSS",
            Exception::SegmentNotPresent(_) => "segment not present",
            Exception::StackFault(_) => "stack-segment fault",
            Exception::GeneralProtection(_) => "general protection",
            Exception::PageFault { .. } => "page fault",
            Exception::FloatingPoint => "x87 floating-point error",
            Exception::AlignmentCheck => "alignment check",
            Exception::MachineCheck => "machine check",
            Exception::SimdFloatingPoint => "SIMD floating-point exception",
        }
    }

    /// The same exception with the EXT bit (bit 0) of a selector error code
    /// set, as when it arises while delivering an external event.
    pub fn with_ext(self) -> Exception {
        match self {
            Exception::InvalidTss(e) => Exception::InvalidTss(e | 1),
            Exception::SegmentNotPresent(e) => Exception::SegmentNotPresent(e | 1),
            Exception::StackFault(e) => Exception::StackFault(e | 1),
            Exception::GeneralProtection(e) => Exception::GeneralProtection(e | 1),
            other => other,
        }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.mnemonic(), self.name())?;
        match self {
            Exception::PageFault { addr, error } => {
                write!(f, " at linear {addr:#010x}, error code {error:#x}")
            }
            other => match other.error_code() {
                Some(e) if e != 0 => write!(f, ", error code {e:#x}"),
                _ => Ok(()),
            },
        }
    }
}

/// The error code naming a GDT/LDT selector (TI and index; RPL dropped).
pub fn selector_error(selector: u16) -> u32 {
    u32::from(selector & 0xfffc)
}

/// The error code naming IDT entry `vector` (IDT bit set).
pub fn idt_error(vector: u8) -> u32 {
    u32::from(vector) << 3 | 2
}

/// What happens when `second` is raised while delivering `first` (SDM vol.
/// 3, table 6-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combination {
    /// Deliver `second` (the first is forgotten: it will recur).
    Serially,
    /// Deliver a double fault.
    DoubleFault,
    /// Shutdown: a triple fault.
    Shutdown,
}

/// Combines an exception raised during the delivery of `first` with it.
pub fn combine(first: Class, second: Class) -> Combination {
    match (first, second) {
        (Class::DoubleFault, _) => Combination::Shutdown,
        (Class::Contributory, Class::Contributory)
        | (Class::PageFault, Class::Contributory | Class::PageFault) => Combination::DoubleFault,
        _ => Combination::Serially,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_and_error_codes_follow_the_sdm() {
        assert_eq!(Exception::GeneralProtection(0x28).vector(), 13);
        assert_eq!(Exception::GeneralProtection(0x28).error_code(), Some(0x28));
        assert_eq!(Exception::DoubleFault.error_code(), Some(0));
        assert_eq!(Exception::InvalidOpcode.error_code(), None);
        assert_eq!(
            Exception::PageFault { addr: 5, error: 6 }.error_code(),
            Some(6)
        );
    }

    #[test]
    fn contributory_during_contributory_is_a_double_fault() {
        assert_eq!(
            combine(Class::Contributory, Class::Contributory),
            Combination::DoubleFault
        );
        assert_eq!(
            combine(Class::PageFault, Class::PageFault),
            Combination::DoubleFault
        );
        assert_eq!(
            combine(Class::Contributory, Class::PageFault),
            Combination::Serially
        );
        assert_eq!(
            combine(Class::Benign, Class::Contributory),
            Combination::Serially
        );
    }

    #[test]
    fn anything_during_a_double_fault_is_a_shutdown() {
        assert_eq!(
            combine(Class::DoubleFault, Class::Benign),
            Combination::Shutdown
        );
    }

    #[test]
    fn idt_and_selector_error_codes_carry_their_flag_bits() {
        assert_eq!(idt_error(0x80), 0x402);
        assert_eq!(selector_error(0x2b), 0x28);
        assert_eq!(
            Exception::GeneralProtection(0x28).with_ext(),
            Exception::GeneralProtection(0x29)
        );
    }
}
