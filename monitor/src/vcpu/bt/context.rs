//! The binary-translation backend as the system model's [`CpuContext`]:
//! registers live in the state block shared with translated code (IF as
//! the virtual IF), memory goes through the guest's page tables and the
//! frame watcher.
//!
//! Physical addresses outside guest RAM go to the MMIO bus: the device
//! that decodes them (the local APIC, the I/O APIC), or, where none does,
//! reads return all ones and writes are dropped, as on a PC.

use super::BtCore;
use crate::cpu::{AccessKind, CpuContext, Eflags, Exception, Privilege, SystemState};
use shadowmmu::{GuestPhys, PAGE_SIZE};
use translator::state::FLAG_IF;

impl BtCore {
    /// Splits a linear range into physical pieces, translating each page
    /// with the given rights.
    pub(super) fn pieces(
        &mut self,
        lin: u32,
        len: usize,
        write: bool,
        privilege: Privilege,
    ) -> Result<Vec<(u32, usize)>, Exception> {
        let user = privilege == Privilege::Current && self.sys.cpl == 3;
        let mut out = Vec::with_capacity(2);
        let mut done = 0usize;
        while done < len {
            let at = lin.wrapping_add(done as u32);
            let chunk = (len - done).min((PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize);
            out.push((self.translate_linear(at, write, user)?, chunk));
            done += chunk;
        }
        Ok(out)
    }
}

impl BtCore {
    /// The physical address of a non-empty range that lies in one page
    /// (the common case, without building a list of pieces).
    fn within_one_page(
        &mut self,
        lin: u32,
        len: usize,
        write: bool,
        privilege: Privilege,
    ) -> Result<Option<u32>, Exception> {
        let offset = (lin & (PAGE_SIZE - 1)) as usize;
        if len == 0 || offset + len > PAGE_SIZE as usize {
            return Ok(None);
        }
        let user = privilege == Privilege::Current && self.sys.cpl == 3;
        self.translate_linear(lin, write, user).map(Some)
    }
}

impl BtCore {
    /// Reads a piece of one page at `phys`: guest RAM, or the device that
    /// decodes it (all ones where none does).
    fn read_phys_piece(&mut self, phys: u32, buf: &mut [u8]) {
        if self.inside_ram(phys, buf.len()) {
            self.ram.read_or_ones(GuestPhys(phys), buf);
        } else {
            self.stats.mmio_accesses += 1;
            self.mmio.read(u64::from(phys), buf);
        }
    }

    /// Writes a piece of one page at `phys`: guest RAM through the frame
    /// watcher, or the device that decodes it (dropped where none does).
    fn write_phys_piece(&mut self, phys: u32, data: &[u8]) {
        if self.inside_ram(phys, data.len()) {
            // Inside RAM: cannot fail.
            let _ = self.write_phys(GuestPhys(phys), data);
        } else {
            self.stats.mmio_accesses += 1;
            self.mmio.write(u64::from(phys), data);
        }
    }

    /// Whether `phys..phys + len` lies in guest RAM (a piece never straddles
    /// RAM's end: RAM is a whole number of pages).
    pub(super) fn inside_ram(&self, phys: u32, len: usize) -> bool {
        (phys as usize)
            .checked_add(len)
            .is_some_and(|end| end <= self.ram.size())
    }
}

impl CpuContext for BtCore {
    fn gpr(&self, r: usize) -> u32 {
        self.state.gpr[r]
    }

    fn set_gpr(&mut self, r: usize, value: u32) {
        self.state.gpr[r] = value;
    }

    fn eip(&self) -> u32 {
        self.state.eip
    }

    fn set_eip(&mut self, value: u32) {
        self.state.eip = value;
    }

    fn eflags(&self) -> Eflags {
        super::eflags_of(&self.state)
    }

    fn set_eflags(&mut self, value: Eflags) {
        let raw = (value | Eflags::FIXED).bits();
        self.state.eflags = raw & !FLAG_IF;
        self.state.vif = u32::from(raw & FLAG_IF != 0);
    }

    fn sys(&self) -> &SystemState {
        &self.sys
    }

    fn sys_mut(&mut self) -> &mut SystemState {
        if !self.sys_dirty {
            self.key_before = self.mode_key();
            self.sys_dirty = true;
        }
        &mut self.sys
    }

    fn read_linear(
        &mut self,
        lin: u32,
        buf: &mut [u8],
        _kind: AccessKind,
        privilege: Privilege,
    ) -> Result<(), Exception> {
        if let Some(phys) = self.within_one_page(lin, buf.len(), false, privilege)? {
            self.read_phys_piece(phys, buf);
            return Ok(());
        }
        let pieces = self.pieces(lin, buf.len(), false, privilege)?;
        let mut at = 0;
        for (phys, n) in pieces {
            self.read_phys_piece(phys, &mut buf[at..at + n]);
            at += n;
        }
        Ok(())
    }

    fn write_linear(
        &mut self,
        lin: u32,
        data: &[u8],
        privilege: Privilege,
    ) -> Result<(), Exception> {
        if let Some(phys) = self.within_one_page(lin, data.len(), true, privilege)? {
            self.write_phys_piece(phys, data);
            return Ok(());
        }
        // Every page is translated before the first byte is written.
        let pieces = self.pieces(lin, data.len(), true, privilege)?;
        let mut at = 0;
        for (phys, n) in pieces {
            self.write_phys_piece(phys, &data[at..at + n]);
            at += n;
        }
        Ok(())
    }

    fn host_tsc(&mut self) -> u64 {
        // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}

/// The backdoor's view of guest memory: linear addresses at the CPL.
impl backdoor::GuestMemory for BtCore {
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), backdoor::MemFault> {
        self.read_linear(linear, buf, AccessKind::Read, Privilege::Current)
            .map_err(|_| backdoor::MemFault { linear })
    }

    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), backdoor::MemFault> {
        let outside_ram = self
            .pieces(linear, data.len(), true, Privilege::Current)
            .map_err(|_| backdoor::MemFault { linear })?
            .iter()
            .any(|&(phys, n)| (phys as usize).saturating_add(n) > self.ram.size());
        if outside_ram {
            // The backdoor's contract: a transfer that cannot complete
            // writes nothing.
            return Err(backdoor::MemFault { linear });
        }
        self.write_linear(linear, data, Privilege::Current)
            .map_err(|_| backdoor::MemFault { linear })
    }
}
