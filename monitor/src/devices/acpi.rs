//! The ACPI tables of the PC: what a kernel reads to find the power
//! management registers ([`super::acpi_pm`]) and how to power the machine
//! off (`\_S5`).
//!
//! Built with rust-vmm's `acpi_tables` (table layouts, checksums, the AML
//! encoder) into a [`TableImage`]: byte blobs at fixed guest-physical
//! addresses in the BIOS area (`0xF0000`-`0xFFFFF`, reserved in the e820
//! map the Linux loader gives), where a kernel finds the RSDP by scanning,
//! as on a PC:
//!
//! | table | contents |
//! |---|---|
//! | RSDP (revision 2) | the RSDT's and the XSDT's addresses |
//! | RSDT, XSDT | the FADT, and the MADT when the machine has APICs (the other tables are the DSDT and FACS) |
//! | FADT (revision 6.5) | PM1a event block, PM1a control block and PM timer ports ([`PM_BASE`]), SCI on IRQ [`SCI_IRQ`], no SMI command port (ACPI mode is always on), legacy devices and an i8042, no VGA, the CMOS century byte, a 32-bit PM timer |
//! | FACS | empty (no firmware waking vector: nestmon has no S3) |
//! | DSDT | `\_S5 = Package () { 5, 5, 0, 0 }`; `\_SB.PCI0`, the PCI host bridge (`PNP0A03`, bus 0) with its resources: buses 0-255, ports `0xCF8`-`0xCFF` (configuration mechanism #1), the rest of the I/O space, the VGA window `0xA0000`-`0xBFFFF` and the memory from the end of RAM to `0xFEBFFFFF` |
//! | MADT (`APIC`, only with [`TableOptions::apic`]) | local APIC at [`LOCAL_APIC_ADDRESS`], PCAT_COMPAT (the 8259A pair is there too); processor 0 with local APIC 0, enabled; I/O APIC [`IOAPIC_ID`] at [`super::ioapic::IOAPIC_BASE`], GSI base 0; ISA IRQ 0 on GSI 2 (the PIT, as on a PC); ISA IRQ 9 on GSI 9, active high and level-triggered (the SCI); NMI on LINT1 of every processor |
//!
//! Without the MADT ([`build_tables`], or [`TableOptions::apic`] false) a
//! kernel routes interrupts through the 8259A pair, as on a PC whose
//! firmware hands it no APIC table. The MADT's header, processor local
//! APIC and I/O APIC come from `acpi_tables::madt`; its flags and the
//! interrupt source override and local APIC NMI entries, which the crate
//! does not offer, are written here in the ACPI 6.5 layout.
//!
//! Invariants: every table's checksum is right (the RSDP's two as well);
//! the blobs do not overlap and lie within [`AREA_START`]..[`AREA_END`];
//! the ports and the sleep type named here are the ones
//! [`super::acpi_pm::AcpiPm`] answers.

use super::acpi_pm::{PM1_CNT_OFFSET, PM1_EVT_OFFSET, PM_BASE, PM_TMR_PORT, S5_SLEEP_TYPE};
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{aml, Aml};

/// The OEM ID every table carries.
pub const OEM_ID: [u8; 6] = *b"NESTMN";
/// The OEM table ID every table carries.
pub const OEM_TABLE_ID: [u8; 8] = *b"NESTMON ";
/// The OEM revision every table carries.
const OEM_REVISION: u32 = 1;
/// The first byte of the area the tables occupy (the RSDP is here).
pub const AREA_START: u32 = 0xF_0000;
/// One past the last byte of that area (the end of the BIOS area).
pub const AREA_END: u32 = 0x10_0000;
/// The SCI's ISA interrupt (as on the PIIX4).
pub const SCI_IRQ: u8 = 9;
/// The CMOS register of the century (the RTC's `0x32`).
const CMOS_CENTURY: u8 = 0x32;
/// IA-PC boot architecture flags: legacy (ISA) devices, an 8042, no VGA.
const IAPC_BOOT_ARCH: u16 = 1 << 0 | 1 << 1 | 1 << 2;
/// FACS alignment (ACPI: 64 bytes).
const FACS_ALIGN: u32 = 64;
/// Alignment of the other tables.
const TABLE_ALIGN: u32 = 16;
/// The local APIC's address the MADT gives.
pub const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
/// The I/O APIC's APIC ID the MADT gives.
pub const IOAPIC_ID: u8 = 1;
/// The I/O APIC's address the MADT gives (below 4 GiB).
const IOAPIC_ADDRESS: u32 = super::ioapic::IOAPIC_BASE as u32;
const _: () = assert!(IOAPIC_ADDRESS as u64 == super::ioapic::IOAPIC_BASE);
/// The MADT's flags: PCAT_COMPAT, the 8259A pair is present.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
/// Offset of the MADT's flags (after the local APIC address).
const MADT_FLAGS_OFFSET: usize = 40;
/// MADT entry type of an interrupt source override.
const MADT_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
/// MADT entry type of a local APIC NMI.
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// The bus of an interrupt source override: ISA.
const ISA_BUS: u8 = 0;
/// MPS INTI flags: polarity and trigger mode conform to the bus.
const INTI_CONFORMS: u16 = 0;
/// MPS INTI flags: active high (bits 1:0 = 01), level-triggered (bits
/// 3:2 = 11).
const INTI_ACTIVE_HIGH_LEVEL: u16 = 0b1101;
/// The ACPI processor UID that means every processor.
const ALL_PROCESSORS: u8 = 0xFF;
/// The local APIC input that NMI is wired to.
const NMI_LINT: u8 = 1;
/// The GSI of the ISA PIT's IRQ 0 (the I/O APIC's pin 2, as on a PC).
const PIT_GSI: u32 = 2;

/// The tables as blobs at their guest-physical addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableImage {
    /// `(address, bytes)`, in address order.
    pub blobs: Vec<(u32, Vec<u8>)>,
}

impl TableImage {
    /// The RSDP's address.
    pub fn rsdp_address(&self) -> u32 {
        AREA_START
    }

    /// Writes the tables into guest RAM (as firmware leaves them).
    pub fn write_to(&self, ram: &shadowmmu::GuestRam) -> Result<(), shadowmmu::RamError> {
        for (at, bytes) in &self.blobs {
            ram.write(shadowmmu::GuestPhys(*at), bytes)?;
        }
        Ok(())
    }
}

/// Hands out addresses in the area, aligned.
struct Placer {
    next: u32,
}

impl Placer {
    fn place(&mut self, len: usize, align: u32) -> u32 {
        let at = self.next.next_multiple_of(align);
        self.next = at + len as u32;
        at
    }
}

/// The start of the memory-mapped I/O space the PCI host bridge decodes
/// above RAM ends (below the I/O APIC's and local APIC's page ranges).
const PCI_MMIO_END: u32 = 0xFEBF_FFFF;

/// What the tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// The machine's RAM, from address 0, in bytes.
    pub ram_bytes: u64,
    /// The machine has a local APIC and an I/O APIC: the RSDT and XSDT
    /// list a MADT.
    pub apic: bool,
}

/// Builds the tables of a machine with `ram_bytes` of RAM from address 0
/// and no APICs (no MADT).
pub fn build_tables(ram_bytes: u64) -> TableImage {
    build_tables_with(TableOptions {
        ram_bytes,
        apic: false,
    })
}

/// Builds the tables of the machine `options` describes.
pub fn build_tables_with(options: TableOptions) -> TableImage {
    let mut placer = Placer { next: AREA_START };
    let rsdp_at = placer.place(RSDP_LEN, TABLE_ALIGN);
    let ram_end = u32::try_from(options.ram_bytes)
        .unwrap_or(u32::MAX)
        .min(PCI_MMIO_END);
    let dsdt = dsdt(ram_end);
    let facs = facs();
    let dsdt_at = placer.place(dsdt.len(), TABLE_ALIGN);
    let facs_at = placer.place(facs.len(), FACS_ALIGN);
    let mut listed = vec![fadt(facs_at, dsdt_at)];
    if options.apic {
        listed.push(madt());
    }
    let listed: Vec<(u32, Vec<u8>)> = listed
        .into_iter()
        .map(|table| (placer.place(table.len(), TABLE_ALIGN), table))
        .collect();
    let pointers: Vec<u32> = listed.iter().map(|(at, _)| *at).collect();
    let rsdt = rsdt(&pointers);
    let rsdt_at = placer.place(rsdt.len(), TABLE_ALIGN);
    let xsdt = xsdt(&pointers);
    let xsdt_at = placer.place(xsdt.len(), TABLE_ALIGN);
    debug_assert!(placer.next <= AREA_END);
    let mut blobs = vec![
        (rsdp_at, rsdp(rsdt_at, xsdt_at)),
        (dsdt_at, dsdt),
        (facs_at, facs),
    ];
    blobs.extend(listed);
    blobs.extend([(rsdt_at, rsdt), (xsdt_at, xsdt)]);
    TableImage { blobs }
}

/// The RSDP's length in revision 2.
const RSDP_LEN: usize = 36;

/// The ACPI checksum byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

/// The RSDP, revision 2, naming both the RSDT (for ACPI 1.0 readers) and
/// the XSDT. Written here because `acpi_tables::rsdp::Rsdp` leaves the
/// RSDT address 0.
fn rsdp(rsdt_at: u32, xsdt_at: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(RSDP_LEN);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(&OEM_ID);
    r.push(2); // revision
    r.extend_from_slice(&rsdt_at.to_le_bytes());
    r.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r.extend_from_slice(&u64::from(xsdt_at).to_le_bytes());
    r.push(0); // extended checksum
    r.extend_from_slice(&[0; 3]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// A table of 32-bit (`RSDT`) or 64-bit (`XSDT`) pointers.
fn pointer_table(signature: [u8; 4], entries: &[u32], wide: bool) -> Vec<u8> {
    let mut table = Sdt::new(signature, 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for &entry in entries {
        if wide {
            table.append(u64::from(entry));
        } else {
            table.append(entry);
        }
    }
    table.as_slice().to_vec()
}

fn rsdt(entries: &[u32]) -> Vec<u8> {
    pointer_table(*b"RSDT", entries, false)
}

fn xsdt(entries: &[u32]) -> Vec<u8> {
    pointer_table(*b"XSDT", entries, true)
}

/// An I/O-port register of `bytes` bytes for the FADT's extended fields.
fn io_register(port: u16, bytes: u8) -> GAS {
    let access = match bytes {
        1 => AccessSize::ByteAccess,
        2 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(
        AddressSpace::SystemIo,
        bytes * 8,
        0,
        access,
        u64::from(port),
    )
}

/// The FADT: the fixed hardware of [`super::acpi_pm`], the FACS and the
/// DSDT.
fn fadt(facs_at: u32, dsdt_at: u32) -> Vec<u8> {
    let pm1_evt = PM_BASE + PM1_EVT_OFFSET;
    let pm1_cnt = PM_BASE + PM1_CNT_OFFSET;
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs_at)
        .dsdt_32(dsdt_at)
        .preferred_pm_profile(PmProfile::Desktop)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::TmrValExt);
    f.sci_int = u16::from(SCI_IRQ).into();
    f.pm1a_evt_blk = u32::from(pm1_evt).into();
    f.pm1a_cnt_blk = u32::from(pm1_cnt).into();
    f.pm_tmr_blk = u32::from(PM_TMR_PORT).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    f.century = CMOS_CENTURY;
    f.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    f.x_pm1a_evt_blk = io_register(pm1_evt, 4);
    f.x_pm1a_cnt_blk = io_register(pm1_cnt, 2);
    f.x_pm_tmr_blk = io_register(PM_TMR_PORT, 4);
    let mut bytes = Vec::new();
    f.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// The MADT: one processor with local APIC 0, the I/O APIC of
/// [`super::ioapic`], the PC's ISA interrupt overrides and the NMI wiring.
fn madt() -> Vec<u8> {
    let local_apic = LocalInterruptController::Address(LOCAL_APIC_ADDRESS);
    let mut madt = MADT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION, local_apic);
    madt.add_structure(ProcessorLocalApic::new(0, 0, EnabledStatus::Enabled));
    madt.add_structure(IoApic::new(IOAPIC_ID, IOAPIC_ADDRESS, 0));
    let mut table = Vec::new();
    madt.to_aml_bytes(&mut table);
    table[MADT_FLAGS_OFFSET..MADT_FLAGS_OFFSET + 4]
        .copy_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    table.extend(interrupt_source_override(0, PIT_GSI, INTI_CONFORMS));
    table.extend(interrupt_source_override(
        SCI_IRQ,
        u32::from(SCI_IRQ),
        INTI_ACTIVE_HIGH_LEVEL,
    ));
    table.extend(local_apic_nmi(ALL_PROCESSORS, INTI_CONFORMS, NMI_LINT));
    seal(&mut table);
    table
}

/// A MADT interrupt source override (type 2, 10 bytes): ISA IRQ `source`
/// is GSI `gsi`, with MPS INTI `flags`.
fn interrupt_source_override(source: u8, gsi: u32, flags: u16) -> [u8; 10] {
    let [g0, g1, g2, g3] = gsi.to_le_bytes();
    let [f0, f1] = flags.to_le_bytes();
    [
        MADT_INTERRUPT_SOURCE_OVERRIDE,
        10,
        ISA_BUS,
        source,
        g0,
        g1,
        g2,
        g3,
        f0,
        f1,
    ]
}

/// A MADT local APIC NMI (type 4, 6 bytes): NMI reaches input LINT`lint`
/// of processor `uid`, with MPS INTI `flags`.
fn local_apic_nmi(uid: u8, flags: u16, lint: u8) -> [u8; 6] {
    let [f0, f1] = flags.to_le_bytes();
    [MADT_LOCAL_APIC_NMI, 6, uid, f0, f1, lint]
}

/// Sets a table's length field to its length and fixes its checksum.
fn seal(table: &mut [u8]) {
    let len = u32::try_from(table.len()).expect("a table is smaller than 4 GiB");
    table[4..8].copy_from_slice(&len.to_le_bytes());
    table[9] = 0;
    table[9] = checksum(table);
}

fn facs() -> Vec<u8> {
    let mut bytes = Vec::new();
    acpi_tables::facs::FACS::new().to_aml_bytes(&mut bytes);
    bytes
}

/// The DSDT: the sleep type of S5 (soft off), the only sleep state, and
/// the PCI host bridge, whose memory window starts at `ram_end`.
fn dsdt(ram_end: u32) -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let s5 = S5_SLEEP_TYPE;
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&s5, &s5, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut table);
    table.append_slice(&pci_host_bridge(ram_end));
    table.as_slice().to_vec()
}

/// `\_SB.PCI0`: the host bridge of [`super::pci`], root of bus 0.
fn pci_host_bridge(ram_end: u32) -> Vec<u8> {
    use aml::{AddressSpace, AddressSpaceCacheable::NotCacheable};
    let config = super::bus::PCI_CONFIG_BASE;
    let buses = AddressSpace::new_bus_number(0u16, 0xffu16);
    let config_ports = aml::IO::new(config, config, 1, 8);
    let ports_below = AddressSpace::new_io(0u16, config - 1, None);
    let ports_above = AddressSpace::new_io(config + 8, 0xffffu16, None);
    let vga = AddressSpace::new_memory(NotCacheable, true, 0xa_0000u32, 0xb_ffffu32, None);
    let above_ram = AddressSpace::new_memory(NotCacheable, true, ram_end, PCI_MMIO_END, None);
    let resources = aml::ResourceTemplate::new(vec![
        &buses,
        &config_ports,
        &ports_below,
        &ports_above,
        &vga,
        &above_ram,
    ]);
    let hid = aml::EISAName::new("PNP0A03");
    let names = [
        aml::Name::new("_HID".into(), &hid),
        aml::Name::new("_ADR".into(), &aml::ZERO),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_BBN".into(), &aml::ZERO),
        aml::Name::new("_CRS".into(), &resources),
    ];
    let children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    let mut bytes = Vec::new();
    aml::Device::new("_SB_.PCI0".into(), children).to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 128 << 20;

    fn with_apic() -> TableImage {
        build_tables_with(TableOptions {
            ram_bytes: RAM,
            apic: true,
        })
    }

    fn blob(image: &TableImage, signature: &[u8]) -> (u32, Vec<u8>) {
        image
            .blobs
            .iter()
            .find(|(_, b)| b.starts_with(signature))
            .cloned()
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(signature)))
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    fn sums_to_zero(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
    }

    #[test]
    fn rsdp_is_at_the_start_of_the_bios_area_with_both_checksums() {
        let image = build_tables(RAM);
        let (at, rsdp) = blob(&image, b"RSD PTR ");
        assert_eq!((at, image.rsdp_address()), (0xF_0000, 0xF_0000));
        assert_eq!(at % 16, 0, "found by a scan on 16-byte boundaries");
        assert_eq!(rsdp.len(), 36);
        assert!(sums_to_zero(&rsdp[..20]), "ACPI 1.0 checksum");
        assert!(sums_to_zero(&rsdp), "extended checksum");
        assert_eq!(rsdp[15], 2, "revision");
        assert_eq!(u32_at(&rsdp, 16), blob(&image, b"RSDT").0);
        assert_eq!(u32_at(&rsdp, 24), blob(&image, b"XSDT").0);
    }

    #[test]
    fn every_table_has_a_good_checksum_and_its_own_length() {
        let (plain, apic) = (build_tables(RAM), with_apic());
        let blobs = plain.blobs.iter().chain(&apic.blobs);
        for (_, table) in blobs.filter(|(_, b)| !b.starts_with(b"RSD ")) {
            if table.starts_with(b"FACS") {
                assert_eq!(u32_at(table, 4) as usize, table.len());
                continue;
            }
            assert_eq!(u32_at(table, 4) as usize, table.len());
            assert!(sums_to_zero(table), "{:?}", &table[..4]);
            assert_eq!(&table[10..16], &OEM_ID);
        }
    }

    #[test]
    fn blobs_are_in_the_bios_area_without_overlap_and_facs_is_aligned() {
        for image in [build_tables(RAM), with_apic()] {
            let mut end = AREA_START;
            for (at, bytes) in &image.blobs {
                assert!(*at >= end, "overlap at {at:#x}");
                end = at + bytes.len() as u32;
            }
            assert!(end <= AREA_END);
            assert_eq!(blob(&image, b"FACS").0 % 64, 0);
        }
    }

    #[test]
    fn madt_is_listed_only_when_the_machine_has_apics() {
        let plain = build_tables(RAM);
        assert!(!plain.blobs.iter().any(|(_, b)| b.starts_with(b"APIC")));
        let image = with_apic();
        let (fadt_at, madt_at) = (blob(&image, b"FACP").0, blob(&image, b"APIC").0);
        let rsdt = blob(&image, b"RSDT").1;
        assert_eq!(rsdt.len(), 44);
        assert_eq!((u32_at(&rsdt, 36), u32_at(&rsdt, 40)), (fadt_at, madt_at));
        let xsdt = blob(&image, b"XSDT").1;
        assert_eq!(xsdt.len(), 52);
        assert_eq!(u32_at(&xsdt, 44), madt_at);
        assert_eq!(u32_at(&xsdt, 48), 0, "64-bit pointer");
    }

    #[test]
    fn madt_checksum_length_and_header_are_right() {
        let madt = blob(&with_apic(), b"APIC").1;
        assert!(sums_to_zero(&madt));
        assert_eq!(u32_at(&madt, 4) as usize, madt.len());
        assert_eq!(madt[8], 1, "revision as acpi_tables gives it");
        assert_eq!(
            (&madt[10..16], &madt[16..24]),
            (&OEM_ID[..], &OEM_TABLE_ID[..])
        );
        assert_eq!(u32_at(&madt, 24), OEM_REVISION);
        assert_eq!(u32_at(&madt, 36), 0xFEE0_0000, "local APIC address");
        assert_eq!(u32_at(&madt, 40), 1, "PCAT_COMPAT");
    }

    /// The MADT's entries after its 44-byte header, each checked to fit.
    fn madt_entries(madt: &[u8]) -> Vec<&[u8]> {
        let mut entries = Vec::new();
        let mut rest = &madt[44..];
        while !rest.is_empty() {
            let len = usize::from(rest[1]);
            assert!(len >= 2 && len <= rest.len(), "entry length {len}");
            entries.push(&rest[..len]);
            rest = &rest[len..];
        }
        entries
    }

    #[test]
    fn madt_entries_decode_to_the_pcs_interrupt_wiring() {
        let madt = blob(&with_apic(), b"APIC").1;
        let expected: [&[u8]; 5] = [
            // Processor local APIC: UID 0, APIC ID 0, enabled.
            &[0, 8, 0, 0, 1, 0, 0, 0],
            // I/O APIC 1 at 0xFEC00000, GSI base 0.
            &[1, 12, 1, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0],
            // ISA IRQ 0 -> GSI 2, conforming to the bus.
            &[2, 10, 0, 0, 2, 0, 0, 0, 0, 0],
            // ISA IRQ 9 -> GSI 9, active high, level-triggered (the SCI).
            &[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0],
            // Local APIC NMI: every processor, conforming, LINT1.
            &[4, 6, 0xff, 0, 0, 1],
        ];
        assert_eq!(madt_entries(&madt), expected);
    }

    #[test]
    fn root_tables_point_at_the_fadt() {
        let image = build_tables(RAM);
        let fadt_at = blob(&image, b"FACP").0;
        let rsdt = blob(&image, b"RSDT").1;
        assert_eq!((rsdt.len(), u32_at(&rsdt, 36)), (40, fadt_at));
        let xsdt = blob(&image, b"XSDT").1;
        assert_eq!(xsdt.len(), 44);
        assert_eq!(
            u64::from_le_bytes(xsdt[36..44].try_into().unwrap()),
            u64::from(fadt_at)
        );
    }

    #[test]
    fn fadt_names_the_pm_ports_the_sci_the_facs_and_the_dsdt() {
        let image = build_tables(RAM);
        let fadt = blob(&image, b"FACP").1;
        assert_eq!(u32_at(&fadt, 36), blob(&image, b"FACS").0);
        assert_eq!(u32_at(&fadt, 40), blob(&image, b"DSDT").0);
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9, "SCI_INT");
        assert_eq!(u32_at(&fadt, 48), 0, "no SMI command port: ACPI mode only");
        assert_eq!(u32_at(&fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(&fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(&fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!((fadt[88], fadt[89], fadt[91]), (4, 2, 4), "lengths");
        assert_eq!(fadt[108], 0x32, "century");
        assert_eq!(u32_at(&fadt, 112) & (1 << 8), 1 << 8, "TMR_VAL_EXT");
        assert_eq!(u32_at(&fadt, 112) & (1 << 20), 0, "not hardware-reduced");
        // X_PM1a_CNT_BLK: system I/O, 16 bits, at 0x604.
        assert_eq!(&fadt[172..176], &[1, 16, 0, 2]);
        assert_eq!(u32_at(&fadt, 176), 0x604);
    }

    #[test]
    fn dsdt_declares_s5_as_a_package_of_the_sleep_type() {
        let dsdt = blob(&build_tables(RAM), b"DSDT").1;
        let body = &dsdt[36..];
        // NameOp "_S5_" PackageOp PkgLength NumElements BytePrefix 5 ...
        assert_eq!(&body[..5], b"\x08_S5_");
        assert_eq!(body[5], 0x12, "PackageOp");
        assert_eq!(body[7], 4, "four elements");
        assert_eq!(&body[8..12], &[0x0a, 5, 0x0a, 5]);
    }

    #[test]
    fn dsdt_describes_the_pci_host_bridge_with_its_windows() {
        let dsdt = blob(&build_tables(RAM), b"DSDT").1;
        let find = |needle: &[u8]| dsdt.windows(needle.len()).position(|w| w == needle);
        assert!(find(b"PCI0").is_some() && find(b"_CRS").is_some());
        // EISAID("PNP0A03") as a DWord: 0x030AD041.
        assert!(
            find(&[0x0c, 0x41, 0xd0, 0x0a, 0x03]).is_some(),
            "_HID PNP0A03"
        );
        // IO (Decode16, 0xCF8, 0xCF8, 1, 8).
        assert!(find(&[0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]).is_some());
        // The memory window from the end of RAM to 0xFEBFFFFF.
        let window: Vec<u8> = [RAM as u32, 0xfebf_ffff]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(find(&window).is_some(), "memory window above RAM");
    }
}
