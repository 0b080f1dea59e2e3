//! The hardware vCPU as the system model's [`CpuContext`] and the shared
//! executor's [`Executor`], for the instructions KVM's instruction
//! emulator gives back (`emulate`): a snapshot of the vCPU's state read
//! with `KVM_GET_*`, changed by `crate::cpu`, and written back with
//! `KVM_SET_*` by [`KvmContext::commit`].
//!
//! Invariants:
//! - Nothing reaches KVM before [`KvmContext::commit`], except guest
//!   memory (written in place, as the hardware would) and an MSR written
//!   by WRMSR (`KVM_SET_MSRS` at once, so a refusal is the instruction's
//!   #GP). A context dropped without a commit leaves the vCPU as it was
//!   but for those.
//! - Memory goes through the guest's 32-bit page tables
//!   (`shadowmmu::walk`, setting accessed and dirty bits as the hardware
//!   does) with the rights the access asks for; a walk that fails is the
//!   guest's #PF with the SDM's error code. Physical addresses outside
//!   RAM read as all ones and drop writes, as binary translation does. A
//!   write translates every page before it writes the first byte.
//! - The context is built only outside PAE paging (the caller refuses
//!   it): `shadowmmu::walk` knows 32-bit paging only.
//! - `commit` writes the segment registers, tables and control registers
//!   only when the instruction changed them (`KVM_SET_SREGS` makes KVM
//!   drop its MMU context when CR0, CR3 or CR4 change), and keeps EFER,
//!   the APIC base and the interrupt bitmap KVM reported. After INVLPG, a
//!   MOV to a control register that changed paging or reloaded CR3, or a
//!   task switch, under paging, it makes KVM drop every translation it
//!   caches (`translation_flush`), since none of them need change what
//!   `KVM_SET_SREGS` compares.
//! - The FXSAVE image comes from `KVM_GET_XSAVE` (initial-state
//!   components filled in) and goes back with `KVM_SET_XSAVE`, x87 and SSE
//!   marked in use; `KVM_GET_FPU`/`KVM_SET_FPU` only where XSAVE is
//!   refused.

use super::{os_error, state, KvmCore};
use crate::cpu::exec::{Executor, ModelFeature};
use crate::cpu::system::{self, FpuKind};
use crate::cpu::{
    msr, AccessKind, CpuContext, Cr4, Eflags, Exception, Fault, Privilege, SystemState,
};
use crate::vcpu::StopReason;
use iced_x86::Instruction;
use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xsave, Msrs,
    KVM_VCPUEVENT_VALID_SHADOW, KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI,
};
use shadowmmu::{walk, Access, GuestLinear, GuestPhys, PagingMode, PAGE_SIZE};

/// The vCPU's state as the system model sees it, over KVM.
pub(super) struct KvmContext<'a> {
    core: &'a KvmCore,
    regs: kvm_regs,
    /// `KVM_GET_SREGS` as read: the base `commit` writes the system
    /// state over.
    sregs: kvm_sregs,
    sys: SystemState,
    /// The system state as read, to see what changed.
    loaded: SystemState,
    events: kvm_vcpu_events,
    debugregs: kvm_debugregs,
    /// The FXSAVE image, read on first use (x87/MMX/SSE instructions,
    /// LDMXCSR/STMXCSR, MASKMOVQ/MASKMOVDQU), and whether the instruction
    /// changed it.
    fx: Option<Box<[u8; 512]>>,
    fx_dirty: bool,
    /// The `KVM_GET_XSAVE` image the FXSAVE image came from (`None`: from
    /// `KVM_GET_FPU`, on a KVM without XSAVE support).
    xsave: Option<Box<kvm_xsave>>,
    /// The instruction invalidated translations (INVLPG, a MOV to a
    /// control register that changed paging or the address space, a task
    /// switch's CR3 load): KVM must drop what it caches of them.
    flush_translations: bool,
}

/// CR3.PWT: flipped, and flipped back, to make `KVM_SET_SREGS` see a new
/// CR3 (see [`translation_flush`]).
const CR3_PWT: u64 = 1 << 3;

/// A KVM ioctl that failed while reading or writing the vCPU's state.
fn ioctl_stop(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StopReason {
    move |e| StopReason::Internal(format!("{what} failed: {}", os_error(e)))
}

/// The SYSENTER MSRs the system model keeps in its MSR file (SYSENTER
/// and SYSEXIT read them there).
const SYSENTER_MSRS: [u32; 3] = [msr::SYSENTER_CS, msr::SYSENTER_ESP, msr::SYSENTER_EIP];

impl<'a> KvmContext<'a> {
    /// Reads the vCPU's registers, system state, debug registers, events
    /// (interrupt shadow, NMI blocking) and SYSENTER MSRs.
    pub(super) fn load(core: &'a KvmCore) -> Result<KvmContext<'a>, StopReason> {
        let regs = core.regs()?;
        let sregs = core.sregs()?;
        let events = core
            .vcpu
            .get_vcpu_events()
            .map_err(ioctl_stop("KVM_GET_VCPU_EVENTS"))?;
        let debugregs = core
            .vcpu
            .get_debug_regs()
            .map_err(ioctl_stop("KVM_GET_DEBUGREGS"))?;
        let mut sys = state::system_state_of(&regs, &sregs);
        sys.dr = [
            debugregs.db[0] as u32,
            debugregs.db[1] as u32,
            debugregs.db[2] as u32,
            debugregs.db[3] as u32,
            debugregs.dr6 as u32,
            debugregs.dr7 as u32,
            debugregs.dr6 as u32,
            debugregs.dr7 as u32,
        ];
        // A shadow KVM reports covers the instruction about to run, which
        // is the one carried out here: it ends with it. The model sets
        // `interrupt_shadow` again if the instruction starts one.
        sys.interrupt_shadow = false;
        sys.nmi_blocked = events.nmi.masked != 0;
        let [cs, esp, eip] = read_msrs(core, SYSENTER_MSRS)?;
        (
            sys.msr.sysenter_cs,
            sys.msr.sysenter_esp,
            sys.msr.sysenter_eip,
        ) = (cs as u32, esp as u32, eip as u32);
        Ok(KvmContext {
            core,
            regs,
            sregs,
            loaded: sys.clone(),
            sys,
            events,
            debugregs,
            fx: None,
            fx_dirty: false,
            xsave: None,
            flush_translations: false,
        })
    }

    /// The vCPU this context reads and writes.
    pub(super) fn core(&self) -> &'a KvmCore {
        self.core
    }

    /// Writes back what the instruction changed: the general registers,
    /// EIP and EFLAGS always; the system state, debug registers, events
    /// and FPU state when they changed.
    pub(super) fn commit(mut self) -> Result<(), StopReason> {
        let vcpu = &self.core.vcpu;
        let mut sregs = self.sregs;
        if system_registers_changed(&self.loaded, &self.sys) {
            state::apply_system_state(&mut sregs, &self.sys);
            sregs.efer = self.sregs.efer;
            vcpu.set_sregs(&sregs)
                .map_err(ioctl_stop("KVM_SET_SREGS"))?;
        }
        // A task switch loaded CR3 from the new TSS (the same value shows
        // only as a new TR; LTR, which loads none, flushes harmlessly).
        let task_switched = self.sys.tr != self.loaded.tr;
        if (self.flush_translations || task_switched) && self.sys.paging() {
            for step in translation_flush(&sregs) {
                vcpu.set_sregs(&step).map_err(ioctl_stop("KVM_SET_SREGS"))?;
            }
        }
        if self.sys.dr != self.loaded.dr {
            let mut debugregs = self.debugregs;
            for (n, db) in debugregs.db.iter_mut().enumerate() {
                *db = u64::from(self.sys.dr[n]);
            }
            (debugregs.dr6, debugregs.dr7) = (u64::from(self.sys.dr[6]), u64::from(self.sys.dr[7]));
            vcpu.set_debug_regs(&debugregs)
                .map_err(ioctl_stop("KVM_SET_DEBUGREGS"))?;
        }
        if let (Some(fx), true) = (&self.fx, self.fx_dirty) {
            match self.xsave.take() {
                Some(mut xsave) => {
                    set_legacy_area(&mut xsave, fx);
                    // SAFETY: `xsave` is what KVM_GET_XSAVE returned
                    // (4096 bytes). KVM_SET_XSAVE reads the vCPU's
                    // `uabi_size` bytes, and KVM_GET_XSAVE succeeds only
                    // when that size fits `struct kvm_xsave` (it fails
                    // with EINVAL otherwise, and the image then comes from
                    // KVM_GET_FPU), so the kernel reads inside `xsave`.
                    unsafe { vcpu.set_xsave(&xsave) }.map_err(ioctl_stop("KVM_SET_XSAVE"))?;
                }
                None => vcpu
                    .set_fpu(&kvm_fpu_of(fx))
                    .map_err(ioctl_stop("KVM_SET_FPU"))?,
            }
        }
        vcpu.set_regs(&self.regs)
            .map_err(ioctl_stop("KVM_SET_REGS"))?;
        let shadow = self.events.interrupt.shadow != 0;
        let nmi = self.events.nmi.masked != 0;
        if self.sys.interrupt_shadow != shadow || self.sys.nmi_blocked != nmi {
            let mut events = self.events;
            events.flags |= KVM_VCPUEVENT_VALID_SHADOW;
            events.interrupt.shadow = self.shadow_kind();
            events.nmi.masked = u8::from(self.sys.nmi_blocked);
            vcpu.set_vcpu_events(&events)
                .map_err(ioctl_stop("KVM_SET_VCPU_EVENTS"))?;
        }
        Ok(())
    }

    /// KVM's kind of interrupt shadow for the model's: STI blocking needs
    /// IF set (a VMX entry check), so a shadow with IF clear is MOV SS
    /// blocking (which also holds debug traps, as MOV SS does).
    fn shadow_kind(&self) -> u8 {
        if !self.sys.interrupt_shadow {
            0
        } else if self.eflags().contains(Eflags::IF) {
            KVM_X86_SHADOW_INT_STI as u8
        } else {
            KVM_X86_SHADOW_INT_MOV_SS as u8
        }
    }

    /// The physical address of `lin` for an access with these rights.
    fn translate(&self, lin: u32, write: bool, privilege: Privilege) -> Result<u32, Exception> {
        if !self.sys.paging() {
            return Ok(lin);
        }
        let mode = PagingMode {
            cr3: self.sys.cr3,
            pse: self.sys.cr4.contains(Cr4::PSE),
            wp: self.sys.cr0.contains(crate::cpu::Cr0::WP),
        };
        let user = privilege == Privilege::Current && self.sys.cpl == 3;
        walk(
            &self.core.ram,
            mode,
            GuestLinear(lin),
            Access { write, user },
        )
        .map(|t| t.phys.0)
        .map_err(|pf| Exception::PageFault {
            addr: pf.addr.0,
            error: pf.error_code,
        })
    }

    /// The physical pieces of `len` bytes at `lin`, page by page.
    fn pieces(
        &self,
        lin: u32,
        len: usize,
        write: bool,
        privilege: Privilege,
    ) -> Result<Vec<(u32, usize)>, Exception> {
        let mut out = Vec::with_capacity(2);
        let mut done = 0usize;
        while done < len {
            let at = lin.wrapping_add(done as u32);
            let chunk = (len - done).min((PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize);
            out.push((self.translate(at, write, privilege)?, chunk));
            done += chunk;
        }
        Ok(out)
    }

    /// Whether `len` bytes at `phys` lie in guest RAM.
    fn inside_ram(&self, phys: u32, len: usize) -> bool {
        (phys as usize)
            .checked_add(len)
            .is_some_and(|end| end <= self.core.ram.size())
    }

    /// The FXSAVE image, read from KVM on first use.
    fn fx(&mut self) -> Result<&mut [u8; 512], Fault> {
        if self.fx.is_none() {
            if let Ok(xsave) = self.core.vcpu.get_xsave() {
                self.fx = Some(Box::new(legacy_area(&xsave)));
                self.xsave = Some(Box::new(xsave));
            }
        }
        if self.fx.is_none() {
            let fpu = self.core.vcpu.get_fpu().map_err(|_| {
                Fault::Unsupported("the FPU state of a KVM vCPU that refuses KVM_GET_FPU")
            })?;
            self.fx = Some(Box::new(fx_image_of(&fpu)));
        }
        self.fx
            .as_deref_mut()
            .ok_or(Fault::Unsupported("the FPU state of a KVM vCPU"))
    }
}

/// Whether the segment registers, descriptor tables or control registers
/// differ (what `KVM_SET_SREGS` carries).
fn system_registers_changed(a: &SystemState, b: &SystemState) -> bool {
    a.seg != b.seg
        || a.ldtr != b.ldtr
        || a.tr != b.tr
        || a.gdtr != b.gdtr
        || a.idtr != b.idtr
        || a.cr0 != b.cr0
        || a.cr2 != b.cr2
        || a.cr3 != b.cr3
        || a.cr4 != b.cr4
}

/// The `KVM_SET_SREGS` writes that make KVM drop every translation it
/// caches for the guest (its shadow pages, or with EPT/NPT the TLB
/// entries of the guest's address space), leaving `sregs` as they are.
///
/// KVM offers user space no INVLPG: `KVM_SET_SREGS` resets the vCPU's MMU
/// context (and flushes the guest's TLB) only when CR0, CR3, CR4 or EFER
/// differ from what it holds, and a MOV to CR3 of the same value, a task
/// switch to the same CR3, or INVLPG carried out by the monitor change
/// none of them. So CR3 is written once with PWT flipped (a different
/// CR3 naming the same page directory) and once as it is: a flush of the
/// whole TLB, which the architecture allows wherever one entry must go.
fn translation_flush(sregs: &kvm_sregs) -> [kvm_sregs; 2] {
    let mut flipped = *sregs;
    flipped.cr3 ^= CR3_PWT;
    [flipped, *sregs]
}

/// Reads `indices` with `KVM_GET_MSRS`; an MSR KVM does not return reads
/// as 0.
fn read_msrs<const N: usize>(core: &KvmCore, indices: [u32; N]) -> Result<[u64; N], StopReason> {
    let entries = indices.map(|index| kvm_msr_entry {
        index,
        ..kvm_msr_entry::default()
    });
    let mut msrs = Msrs::from_entries(&entries)
        .map_err(|e| StopReason::Internal(format!("cannot build a KVM_GET_MSRS request: {e:?}")))?;
    let read = core
        .vcpu
        .get_msrs(&mut msrs)
        .map_err(ioctl_stop("KVM_GET_MSRS"))?;
    let mut values = [0u64; N];
    for (value, entry) in values.iter_mut().zip(&msrs.as_slice()[..read.min(N)]) {
        *value = entry.data;
    }
    Ok(values)
}

/// XSTATE_BV's x87 and SSE bits: the legacy area's x87 state, and its
/// XMM registers and MXCSR, are what `KVM_SET_XSAVE` loads.
const XSTATE_X87_SSE: u64 = 0b11;
/// Offset of XSTATE_BV (the XSAVE header's first field) in an XSAVE
/// image.
const XSTATE_BV: usize = 512;

/// The FXSAVE image (64-bit layout) at the start of an XSAVE image.
/// `KVM_GET_XSAVE` fills a component in its initial state with its
/// initial values; `KVM_GET_FPU` copies KVM's buffer as it is, which for
/// such a component (after FNINIT, say, with XSAVEOPT/XSAVES) holds stale
/// bytes.
fn legacy_area(xsave: &kvm_xsave) -> [u8; 512] {
    let mut fx = [0u8; 512];
    for (bytes, word) in fx.chunks_exact_mut(4).zip(&xsave.region) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    fx
}

/// Puts `fx` in `xsave`'s legacy area and marks the x87 and SSE
/// components as not in their initial state: `KVM_SET_FPU` writes KVM's
/// buffer without touching XSTATE_BV, so a component KVM holds as
/// initial (after FNINIT) would be loaded as initial again, dropping the
/// write (a KVM quirk seen under `kvm_pvm`).
fn set_legacy_area(xsave: &mut kvm_xsave, fx: &[u8; 512]) {
    for (word, bytes) in xsave.region.iter_mut().zip(fx.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let at = XSTATE_BV / 4;
    let bv = (u64::from(xsave.region[at + 1]) << 32 | u64::from(xsave.region[at])) | XSTATE_X87_SSE;
    (xsave.region[at], xsave.region[at + 1]) = (bv as u32, (bv >> 32) as u32);
}

/// The FXSAVE image (legacy layout, 64-bit instruction and data
/// pointers, as KVM converts it) of `fpu`.
fn fx_image_of(fpu: &kvm_fpu) -> [u8; 512] {
    let mut fx = [0u8; 512];
    fx[0..2].copy_from_slice(&fpu.fcw.to_le_bytes());
    fx[2..4].copy_from_slice(&fpu.fsw.to_le_bytes());
    fx[4] = fpu.ftwx;
    fx[6..8].copy_from_slice(&fpu.last_opcode.to_le_bytes());
    fx[8..16].copy_from_slice(&fpu.last_ip.to_le_bytes());
    fx[16..24].copy_from_slice(&fpu.last_dp.to_le_bytes());
    fx[24..28].copy_from_slice(&fpu.mxcsr.to_le_bytes());
    fx[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
    for (n, st) in fpu.fpr.iter().enumerate() {
        fx[32 + 16 * n..48 + 16 * n].copy_from_slice(st);
    }
    for (n, xmm) in fpu.xmm.iter().enumerate() {
        fx[160 + 16 * n..176 + 16 * n].copy_from_slice(xmm);
    }
    fx
}

/// The `kvm_fpu` of an FXSAVE image (the inverse of [`fx_image_of`]).
fn kvm_fpu_of(fx: &[u8; 512]) -> kvm_fpu {
    let u16_at = |at: usize| u16::from_le_bytes([fx[at], fx[at + 1]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&fx[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut fpu = kvm_fpu {
        fcw: u16_at(0),
        fsw: u16_at(2),
        ftwx: fx[4],
        last_opcode: u16_at(6),
        last_ip: u64_at(8),
        last_dp: u64_at(16),
        mxcsr: u32::from_le_bytes([fx[24], fx[25], fx[26], fx[27]]),
        ..kvm_fpu::default()
    };
    for (n, st) in fpu.fpr.iter_mut().enumerate() {
        st.copy_from_slice(&fx[32 + 16 * n..48 + 16 * n]);
    }
    for (n, xmm) in fpu.xmm.iter_mut().enumerate() {
        xmm.copy_from_slice(&fx[160 + 16 * n..176 + 16 * n]);
    }
    fpu
}

impl CpuContext for KvmContext<'_> {
    fn gpr(&self, r: usize) -> u32 {
        state::guest_registers(&self.regs).gpr[r]
    }

    fn set_gpr(&mut self, r: usize, value: u32) {
        let mut gpr = state::guest_registers(&self.regs).gpr;
        gpr[r] = value;
        state::set_general_registers(&mut self.regs, gpr);
    }

    fn eip(&self) -> u32 {
        self.regs.rip as u32
    }

    fn set_eip(&mut self, value: u32) {
        self.regs.rip = u64::from(value);
    }

    fn eflags(&self) -> Eflags {
        Eflags::from_bits_retain(self.regs.rflags as u32)
    }

    fn set_eflags(&mut self, value: Eflags) {
        self.regs.rflags = u64::from((value | Eflags::FIXED).bits());
    }

    fn sys(&self) -> &SystemState {
        &self.sys
    }

    fn sys_mut(&mut self) -> &mut SystemState {
        &mut self.sys
    }

    fn read_linear(
        &mut self,
        lin: u32,
        buf: &mut [u8],
        _kind: AccessKind,
        privilege: Privilege,
    ) -> Result<(), Exception> {
        let pieces = self.pieces(lin, buf.len(), false, privilege)?;
        self.core.ram.read_pieces_or_ones(&pieces, buf);
        Ok(())
    }

    fn write_linear(
        &mut self,
        lin: u32,
        data: &[u8],
        privilege: Privilege,
    ) -> Result<(), Exception> {
        let pieces = self.pieces(lin, data.len(), true, privilege)?;
        let mut at = 0;
        for (phys, n) in pieces {
            if self.inside_ram(phys, n) {
                // Inside RAM: cannot fail.
                let _ = self.core.ram.write(GuestPhys(phys), &data[at..at + n]);
            }
            at += n;
        }
        Ok(())
    }

    fn host_tsc(&mut self) -> u64 {
        // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}

impl Executor for KvmContext<'_> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.core.model.query(leaf, subleaf)
    }

    fn offers(&self, feature: ModelFeature) -> bool {
        self.core.model.offers(match feature {
            ModelFeature::Sep => crate::cpuid::SEP,
            ModelFeature::Msr => crate::cpuid::MSR,
        })
    }

    fn cr4_writable(&self) -> Cr4 {
        self.core.model.cr4_bits()
    }

    fn undefined(&self, i: &Instruction) -> bool {
        self.core.isa.availability(i) == translator::Availability::Undefined
    }

    fn fpu_kind(&self, i: &Instruction) -> Option<FpuKind> {
        crate::vcpu::fpu_kind(i)
    }

    fn port_exempt(&self, port: u16) -> bool {
        self.core.unprivileged_ports.contains(&port)
    }

    /// KVM's emulator carries INVLPG out itself, but one the monitor
    /// carries out (given back, or at ring 0 after a task switch) never
    /// reaches KVM's TLB: [`KvmContext::commit`] makes KVM drop its
    /// translations ([`translation_flush`]).
    fn after_invlpg(&mut self, _lin: u32) {
        self.flush_translations = true;
    }

    /// The new control registers reach KVM at [`KvmContext::commit`]; a
    /// reload of the same CR3 changes nothing `KVM_SET_SREGS` sees, so
    /// the commit flushes KVM's translations as well.
    fn after_paging_change(&mut self) {
        self.flush_translations = true;
    }

    fn read_msr(&mut self, index: u32) -> Result<u64, Exception> {
        system::require_cpl0(self)?;
        let entries = [kvm_msr_entry {
            index,
            ..kvm_msr_entry::default()
        }];
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| Exception::GeneralProtection(0))?;
        match self.core.vcpu.get_msrs(&mut msrs) {
            Ok(1) => Ok(msrs.as_slice()[0].data),
            _ => Err(Exception::GeneralProtection(0)),
        }
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), Exception> {
        system::require_cpl0(self)?;
        let entries = [kvm_msr_entry {
            index,
            data: value,
            ..kvm_msr_entry::default()
        }];
        let msrs = Msrs::from_entries(&entries).map_err(|_| Exception::GeneralProtection(0))?;
        match self.core.vcpu.set_msrs(&msrs) {
            Ok(1) => {}
            _ => return Err(Exception::GeneralProtection(0)),
        }
        let msr = &mut self.sys.msr;
        match index {
            msr::SYSENTER_CS => msr.sysenter_cs = value as u32,
            msr::SYSENTER_ESP => msr.sysenter_esp = value as u32,
            msr::SYSENTER_EIP => msr.sysenter_eip = value as u32,
            _ => {}
        }
        self.loaded.msr = self.sys.msr.clone();
        Ok(())
    }

    fn fx_image(&mut self) -> Result<[u8; 512], Fault> {
        self.fx().map(|fx| *fx)
    }

    fn fx_image_mut(&mut self) -> Result<&mut [u8; 512], Fault> {
        self.fx_dirty = true;
        self.fx()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fx_image_round_trips_through_kvm_fpu() {
        let mut fpu = kvm_fpu {
            fcw: 0x037f,
            fsw: 0x3800,
            ftwx: 0xff,
            last_opcode: 0x7ff,
            last_ip: 0x0008_0010_2030,
            last_dp: 0x0010_0020_4050,
            mxcsr: 0x1f80,
            ..kvm_fpu::default()
        };
        fpu.fpr[7] = [7; 16];
        fpu.xmm[15] = [0x5a; 16];
        let fx = fx_image_of(&fpu);
        assert_eq!(&fx[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(&fx[32 + 16 * 7..48 + 16 * 7], &[7; 16]);
        assert_eq!(kvm_fpu_of(&fx), fpu);
    }

    #[test]
    fn a_translation_flush_writes_a_different_cr3_then_the_same_state() {
        let sregs = kvm_sregs {
            cr0: 0x8000_0011,
            cr3: 0x0010_2000,
            cr4: 0x10,
            ..kvm_sregs::default()
        };
        let [first, second] = translation_flush(&sregs);
        assert_ne!(first.cr3, sregs.cr3, "KVM sees a CR3 change");
        assert_eq!(
            first.cr3 & !0xfff,
            sregs.cr3 & !0xfff,
            "same page directory"
        );
        assert_eq!((first.cr0, first.cr4), (sregs.cr0, sregs.cr4));
        assert_eq!(second, sregs, "the state is left as it was");
    }

    #[test]
    fn the_legacy_area_round_trips_and_marks_x87_and_sse_in_use() {
        let mut xsave = kvm_xsave::default();
        let mut fx = [0u8; 512];
        fx[0..2].copy_from_slice(&0x027fu16.to_le_bytes());
        fx[24..28].copy_from_slice(&0x3f80u32.to_le_bytes());
        fx[511] = 0xa5;
        xsave.region[XSTATE_BV / 4] = 0b100;
        set_legacy_area(&mut xsave, &fx);
        assert_eq!(legacy_area(&xsave), fx);
        assert_eq!(xsave.region[XSTATE_BV / 4], 0b111, "AVX's bit kept");
        assert_eq!(xsave.region[XSTATE_BV / 4 + 1], 0);
    }

    #[test]
    fn changed_system_registers_are_seen() {
        let a = SystemState::multiboot_entry();
        let mut b = a.clone();
        assert!(!system_registers_changed(&a, &b));
        b.dr[7] = 0x401;
        b.interrupt_shadow = true;
        assert!(!system_registers_changed(&a, &b), "not carried by SREGS");
        b.seg[1].selector = crate::cpu::Selector(0x1b);
        assert!(system_registers_changed(&a, &b));
    }
}
