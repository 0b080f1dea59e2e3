//! The return-prediction stack: the host stack translated code runs on, so
//! that a guest `call` can be a host `call` and a guest `ret` a host `ret`,
//! which the host CPU's return-stack buffer predicts.
//!
//! A translated guest `call` pushes the guest return address as before and
//! then makes a host `call` to the callee's translation; the host return
//! address is the *continuation* emitted right after it, which checks that
//! the guest `ret` popped the expected guest address (R9D) and then
//! continues at the translation of that address. A translated guest `ret`
//! loads the guest target into R9D, points R10 at its own indirect-branch
//! lookup and makes a host `ret`. A continuation that finds another target
//! falls back to the lookup; a `ret` with no host return address of its
//! own lands on the *sentinel* at the stack's top, a runtime stub that
//! leaves the sentinel in place and jumps to R10, the ret's lookup.
//!
//! Layout (one per vCPU): an inaccessible guard page, then
//! [`STACK_BYTES`], whose last slot holds the sentinel's address;
//! `CpuState::rsb_top` is that slot's address. Every entry to translated
//! code starts with RSP there (no prediction survives an exit), and so
//! does every inline privilege change (a continuation belongs to the mode
//! of its call). A guest recursion deeper than the stack reaches the
//! guard with a host `call`: the fault handler leaves with
//! `ExitReason::CallOverflow`, the run loop stops before the guest call
//! and enters again with the stack empty, so no depth is too deep, and a
//! cycle of units closed by calls alone (which do not poll for exit
//! requests) stops within 128 Ki turns. The PUSHFQ of a unit whose own
//! pushes are none yet (see `verify`) may reach it too: the handler
//! starts the stack again from its top and the PUSHFQ runs again. Every
//! signal handler runs on an alternate stack (`runtime::
//! ensure_signal_stack`, `SA_ONSTACK`), never on this one.
//!
//! Invariants:
//! - Only host `call`s of translated code and the sentinel store what a
//!   host `ret` may pop: the region is not guest memory, the monitor never
//!   writes it after [`ReturnStack::new`], and the confinement verifier
//!   allows no other store below a unit's own pushes (see `verify`).
//! - A continuation is only entered in the address space and mode its call
//!   ran in, and only while no translation died (every one of those
//!   changes goes through the monitor, and every entry resets RSP; inline
//!   privilege changes reset it too).

/// The bytes of the stack proper (128 Ki return addresses).
pub const STACK_BYTES: usize = 1 << 20;
/// The inaccessible page below the stack.
pub const GUARD_BYTES: usize = 4096;

/// The guard page below the stack whose empty RSP is `top`
/// (`CpuState::rsb_top`).
pub fn guard_of(top: u64) -> std::ops::Range<u64> {
    let bottom = top + 8 - STACK_BYTES as u64;
    bottom - GUARD_BYTES as u64..bottom
}

/// One vCPU's return-prediction stack.
#[derive(Debug)]
pub struct ReturnStack {
    mapping: *mut libc::c_void,
    mapping_len: usize,
    top: u64,
}

// SAFETY: the mapping is owned by this value and only touched through the
// top slot written in `new`; moving it to another thread is fine.
unsafe impl Send for ReturnStack {}

impl ReturnStack {
    /// Maps a stack whose top slot holds `sentinel` (the runtime's
    /// sentinel stub).
    pub fn new(sentinel: u64) -> std::io::Result<ReturnStack> {
        let mapping_len = GUARD_BYTES + STACK_BYTES;
        // SAFETY: a fresh anonymous reservation; no existing memory is
        // affected.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // Owns the reservation from here on (unmapped on every return).
        let mut stack = ReturnStack {
            mapping,
            mapping_len,
            top: 0,
        };
        let bottom = mapping as usize + GUARD_BYTES;
        // SAFETY: [bottom, bottom + STACK_BYTES) is the reservation above
        // its guard page.
        let made = unsafe {
            libc::mprotect(
                bottom as *mut libc::c_void,
                STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if made != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let top = bottom + STACK_BYTES - 8;
        // SAFETY: `top` is the last slot of the stack just made writable.
        unsafe { (top as *mut u64).write(sentinel) };
        stack.top = top as u64;
        Ok(stack)
    }

    /// The value of `CpuState::rsb_top`: RSP of the empty stack, whose
    /// slot holds the sentinel.
    pub fn top(&self) -> u64 {
        self.top
    }
}

impl Drop for ReturnStack {
    fn drop(&mut self) {
        // SAFETY: the reservation made in `new`, unmapped once.
        unsafe { libc::munmap(self.mapping, self.mapping_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_slot_holds_the_sentinel_above_a_mapped_stack_and_its_guard() {
        let stack = ReturnStack::new(0x1234_5678).unwrap();
        let top = stack.top();
        // SAFETY: the top slot is mapped and holds the sentinel.
        assert_eq!(unsafe { (top as *const u64).read() }, 0x1234_5678);
        let guard = guard_of(top);
        assert_eq!(guard.end - guard.start, GUARD_BYTES as u64);
        assert_eq!(top + 8 - guard.end, STACK_BYTES as u64);
        // SAFETY: the stack's lowest slot is mapped read-write.
        unsafe { (guard.end as *mut u64).write(7) };
    }
}
