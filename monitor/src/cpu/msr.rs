//! Model-specific registers of the guest CPU: the ones an i686-class
//! processor with SEP, PAT and MTRRs has (Intel SDM vol. 4), held as storage
//! where they have no effect the monitor must model. RDMSR/WRMSR of any
//! other MSR, or a write of reserved bits, raises #GP(0).

use super::exception::Exception;

/// IA32_TIME_STAMP_COUNTER.
pub const TSC: u32 = 0x10;
/// IA32_PLATFORM_ID.
pub const PLATFORM_ID: u32 = 0x17;
/// IA32_APIC_BASE.
pub const APIC_BASE: u32 = 0x1b;
/// IA32_BIOS_SIGN_ID (microcode revision).
pub const BIOS_SIGN_ID: u32 = 0x8b;
/// IA32_MTRRCAP.
pub const MTRRCAP: u32 = 0xfe;
/// IA32_SYSENTER_CS.
pub const SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const SYSENTER_EIP: u32 = 0x176;
/// IA32_MCG_CAP.
pub const MCG_CAP: u32 = 0x179;
/// IA32_MCG_STATUS.
pub const MCG_STATUS: u32 = 0x17a;
/// IA32_PERF_STATUS.
pub const PERF_STATUS: u32 = 0x198;
/// IA32_PERF_CTL.
pub const PERF_CTL: u32 = 0x199;
/// IA32_MISC_ENABLE.
pub const MISC_ENABLE: u32 = 0x1a0;
/// IA32_MTRR_PHYSBASE0 (PHYSBASEn = 0x200 + 2n, PHYSMASKn = 0x201 + 2n).
pub const MTRR_PHYSBASE0: u32 = 0x200;
/// IA32_MTRR_FIX64K_00000.
pub const MTRR_FIX64K: u32 = 0x250;
/// IA32_MTRR_FIX16K_80000 and _A0000.
pub const MTRR_FIX16K: [u32; 2] = [0x258, 0x259];
/// IA32_MTRR_FIX4K_C0000 .. _F8000.
pub const MTRR_FIX4K_FIRST: u32 = 0x268;
/// IA32_PAT.
pub const PAT: u32 = 0x277;
/// IA32_MTRR_DEF_TYPE.
pub const MTRR_DEF_TYPE: u32 = 0x2ff;
/// IA32_EFER (only on CPUs with long mode or NX; not on this model).
pub const EFER: u32 = 0xc000_0080;

/// Variable-range MTRR pairs the model reports in MTRRCAP.
pub const VARIABLE_MTRRS: usize = 8;
/// The default local APIC base.
pub const APIC_BASE_DEFAULT: u64 = 0xfee0_0000;
/// IA32_APIC_BASE.BSP: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EN: the local APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// The PAT value after reset.
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// The MSR file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msrs {
    /// Guest TSC minus host TSC.
    pub tsc_offset: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u32,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u32,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// PHYSBASE/PHYSMASK pairs.
    pub mtrr_variable: [(u64, u64); VARIABLE_MTRRS],
    /// FIX64K, FIX16K x2, FIX4K x8.
    pub mtrr_fixed: [u64; 11],
    /// IA32_PERF_CTL.
    pub perf_ctl: u64,
    /// IA32_MCG_STATUS.
    pub mcg_status: u64,
}

impl Default for Msrs {
    fn default() -> Self {
        Msrs {
            tsc_offset: 0,
            apic_base: APIC_BASE_DEFAULT | APIC_BASE_BSP | APIC_BASE_ENABLE,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: PAT_RESET,
            misc_enable: 1, // fast-strings enabled
            mtrr_def_type: 0,
            mtrr_variable: [(0, 0); VARIABLE_MTRRS],
            mtrr_fixed: [0; 11],
            perf_ctl: 0,
            mcg_status: 0,
        }
    }
}

/// Valid memory types in PAT entries and MTRRs (UC, WC, WT, WP, WB, UC-).
fn valid_memory_type(t: u64, pat: bool) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6) || (pat && t == 7)
}

fn fixed_index(msr: u32) -> Option<usize> {
    match msr {
        MTRR_FIX64K => Some(0),
        m if MTRR_FIX16K.contains(&m) => Some(1 + (m - MTRR_FIX16K[0]) as usize),
        m if (MTRR_FIX4K_FIRST..MTRR_FIX4K_FIRST + 8).contains(&m) => {
            Some(3 + (m - MTRR_FIX4K_FIRST) as usize)
        }
        _ => None,
    }
}

fn variable_index(msr: u32) -> Option<(usize, bool)> {
    let n = msr.checked_sub(MTRR_PHYSBASE0)? as usize;
    (n < 2 * VARIABLE_MTRRS).then_some((n / 2, n % 2 == 1))
}

/// Physical address bits the model reports (36, as P6-family parts).
const PHYS_ADDR_MASK: u64 = (1 << 36) - 1;

impl Msrs {
    /// RDMSR of `msr` with the host TSC reading `host_tsc`.
    pub fn read(&self, msr: u32, host_tsc: u64) -> Result<u64, Exception> {
        let gp = Exception::GeneralProtection(0);
        Ok(match msr {
            TSC => host_tsc.wrapping_add(self.tsc_offset),
            PLATFORM_ID => 0,
            APIC_BASE => self.apic_base,
            BIOS_SIGN_ID => 0,
            MTRRCAP => VARIABLE_MTRRS as u64 | 1 << 8 | 1 << 10, // FIX, WC
            SYSENTER_CS => u64::from(self.sysenter_cs),
            SYSENTER_ESP => u64::from(self.sysenter_esp),
            SYSENTER_EIP => u64::from(self.sysenter_eip),
            MCG_CAP => 0,
            MCG_STATUS => self.mcg_status,
            PERF_STATUS => self.perf_ctl & 0xffff,
            PERF_CTL => self.perf_ctl,
            MISC_ENABLE => self.misc_enable,
            PAT => self.pat,
            MTRR_DEF_TYPE => self.mtrr_def_type,
            m => match (fixed_index(m), variable_index(m)) {
                (Some(i), _) => self.mtrr_fixed[i],
                (_, Some((i, false))) => self.mtrr_variable[i].0,
                (_, Some((i, true))) => self.mtrr_variable[i].1,
                _ => return Err(gp),
            },
        })
    }

    /// WRMSR of `value` to `msr` with the host TSC reading `host_tsc`.
    pub fn write(&mut self, msr: u32, value: u64, host_tsc: u64) -> Result<(), Exception> {
        let gp = Exception::GeneralProtection(0);
        let check = |ok: bool| if ok { Ok(()) } else { Err(gp) };
        match msr {
            TSC => self.tsc_offset = value.wrapping_sub(host_tsc),
            APIC_BASE => {
                // BSP is read-only; base below 4 GiB on this model; bits 0-7,
                // 9-10 reserved.
                check(value & 0x6ff == 0 && value & !PHYS_ADDR_MASK == 0)?;
                self.apic_base = (value & !APIC_BASE_BSP) | (self.apic_base & APIC_BASE_BSP);
            }
            BIOS_SIGN_ID => {}
            SYSENTER_CS => self.sysenter_cs = value as u32,
            SYSENTER_ESP => self.sysenter_esp = value as u32,
            SYSENTER_EIP => self.sysenter_eip = value as u32,
            MCG_STATUS => {
                check(value == 0)?;
                self.mcg_status = value;
            }
            PERF_CTL => self.perf_ctl = value,
            MISC_ENABLE => self.misc_enable = value,
            PAT => {
                check((0..8).all(|i| valid_memory_type(value >> (8 * i) & 0xff, true)))?;
                self.pat = value;
            }
            MTRR_DEF_TYPE => {
                check(value & !0xcff == 0 && valid_memory_type(value & 0xff, false))?;
                self.mtrr_def_type = value;
            }
            m => match (fixed_index(m), variable_index(m)) {
                (Some(i), _) => {
                    check((0..8).all(|b| valid_memory_type(value >> (8 * b) & 0xff, false)))?;
                    self.mtrr_fixed[i] = value;
                }
                (_, Some((i, false))) => {
                    check(value & !(PHYS_ADDR_MASK & !0xfff | 0xff) == 0)?;
                    check(valid_memory_type(value & 0xff, false))?;
                    self.mtrr_variable[i].0 = value;
                }
                (_, Some((i, true))) => {
                    check(value & !(PHYS_ADDR_MASK & !0xfff | 0x800) == 0)?;
                    self.mtrr_variable[i].1 = value;
                }
                _ => return Err(gp),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysenter_msrs_hold_what_was_written() {
        let mut m = Msrs::default();
        m.write(SYSENTER_CS, 0x10, 0).unwrap();
        m.write(SYSENTER_EIP, 0xc010_0000, 0).unwrap();
        assert_eq!(m.read(SYSENTER_CS, 0), Ok(0x10));
        assert_eq!(m.read(SYSENTER_EIP, 0), Ok(0xc010_0000));
    }

    #[test]
    fn tsc_write_sets_an_offset_from_the_host_counter() {
        let mut m = Msrs::default();
        m.write(TSC, 1000, 5000).unwrap();
        assert_eq!(m.read(TSC, 5250), Ok(1250));
    }

    #[test]
    fn unknown_msr_and_reserved_bits_raise_gp() {
        let mut m = Msrs::default();
        let gp = Exception::GeneralProtection(0);
        assert_eq!(m.read(0x1234_5678, 0), Err(gp));
        assert_eq!(m.read(EFER, 0), Err(gp));
        assert_eq!(m.write(0x1234_5678, 0, 0), Err(gp));
        assert_eq!(m.write(PAT, 0x02, 0), Err(gp), "memory type 2 is reserved");
        assert_eq!(m.write(MCG_STATUS, 1, 0), Err(gp));
    }

    #[test]
    fn apic_base_keeps_the_bsp_bit() {
        let mut m = Msrs::default();
        m.write(APIC_BASE, 0xfec0_0000 | APIC_BASE_ENABLE, 0)
            .unwrap();
        assert_eq!(
            m.read(APIC_BASE, 0),
            Ok(0xfec0_0000 | APIC_BASE_ENABLE | APIC_BASE_BSP)
        );
    }

    #[test]
    fn mtrrs_are_storage_with_type_checks() {
        let mut m = Msrs::default();
        m.write(MTRR_PHYSBASE0 + 2, 0x8000_0006, 0).unwrap();
        m.write(MTRR_PHYSBASE0 + 3, 0xf_c000_0800, 0).unwrap();
        assert_eq!(m.read(MTRR_PHYSBASE0 + 2, 0), Ok(0x8000_0006));
        assert_eq!(m.read(MTRR_PHYSBASE0 + 3, 0), Ok(0xf_c000_0800));
        assert!(m.write(MTRR_FIX64K, 0x0606_0606_0606_0606, 0).is_ok());
        assert!(m.write(MTRR_FIX4K_FIRST + 7, 0x0303, 0).is_err());
        assert_eq!(m.read(MTRRCAP, 0).unwrap() & 0xff, 8);
    }
}
