//! Images loaded by the Multiboot header's own address fields (flag bit 16,
//! the "a.out kludge"): one contiguous range of the file, then zeroed bss.
//!
//! Invariants: the header's file offset ties `header_addr` to the file, so
//! the first byte loaded is at file offset
//! `header_offset - (header_addr - load_addr)`; that offset and the loaded
//! range are checked against the file before any byte is borrowed, and the
//! returned segment has `data.len() <= mem_size`.

use super::header::LoadAddresses;
use super::le::bytes_at;
use super::{LoadError, LoadPlan, Segment};

/// The single segment described by `addresses` for the header at `header_offset`.
pub fn plan<'a>(
    image: &'a [u8],
    header_offset: usize,
    addresses: &LoadAddresses,
) -> Result<LoadPlan<'a>, LoadError> {
    let bad = LoadError::BadLoadAddresses;
    let header_to_load = addresses
        .header_addr
        .checked_sub(addresses.load_addr)
        .ok_or(bad("load_addr lies above header_addr"))?;
    let file_start = (header_offset as u64)
        .checked_sub(u64::from(header_to_load))
        .ok_or(bad("load_addr lies before the start of the file"))?;
    let load_len = load_length(image, file_start, addresses)?;
    let mem_size = memory_size(load_len, addresses)?;
    let data = bytes_at(image, file_start, load_len).ok_or_else(|| LoadError::Truncated {
        what: "the range the Multiboot header asks to load".into(),
        needed: file_start + load_len,
        len: image.len(),
    })?;
    if mem_size == 0 {
        return Err(LoadError::NoLoadableSegments);
    }
    let segment = Segment {
        paddr: addresses.load_addr,
        data,
        mem_size,
    };
    Ok(LoadPlan {
        segments: vec![segment],
        entry: addresses.entry_addr,
    })
}

/// Bytes to copy from the file: up to `load_end_addr`, or to the end of the file.
fn load_length(image: &[u8], file_start: u64, addresses: &LoadAddresses) -> Result<u64, LoadError> {
    if addresses.load_end_addr == 0 {
        return Ok((image.len() as u64).saturating_sub(file_start));
    }
    addresses
        .load_end_addr
        .checked_sub(addresses.load_addr)
        .map(u64::from)
        .ok_or(LoadError::BadLoadAddresses(
            "load_end_addr lies below load_addr",
        ))
}

/// Bytes the image occupies in memory: up to `bss_end_addr`, or just what is loaded.
fn memory_size(load_len: u64, addresses: &LoadAddresses) -> Result<u32, LoadError> {
    if addresses.bss_end_addr == 0 {
        let fits = u64::from(addresses.load_addr) + load_len <= 1 << 32;
        return u32::try_from(load_len)
            .ok()
            .filter(|_| fits)
            .ok_or(LoadError::BadLoadAddresses(
                "the image would extend past 4 GiB",
            ));
    }
    let size = addresses
        .bss_end_addr
        .checked_sub(addresses.load_addr)
        .ok_or(LoadError::BadLoadAddresses(
            "bss_end_addr lies below load_addr",
        ))?;
    if u64::from(size) < load_len {
        return Err(LoadError::BadLoadAddresses(
            "bss_end_addr lies below the end of the loaded data",
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(load_end_addr: u32, bss_end_addr: u32) -> LoadAddresses {
        LoadAddresses {
            header_addr: 0x10_0010,
            load_addr: 0x10_0000,
            load_end_addr,
            bss_end_addr,
            entry_addr: 0x10_0040,
        }
    }

    fn image() -> Vec<u8> {
        (0..=255u8).collect()
    }

    #[test]
    fn load_starts_where_header_addr_puts_the_header() {
        let image = image();
        let plan = plan(&image, 0x30, &addresses(0x10_0020, 0x10_0100)).unwrap();
        let segment = &plan.segments[0];
        assert_eq!(segment.paddr, 0x10_0000);
        assert_eq!(segment.data, &image[0x20..0x40]);
        assert_eq!(segment.mem_size, 0x100);
        assert_eq!(plan.entry, 0x10_0040);
    }

    #[test]
    fn zero_load_end_loads_to_the_end_of_the_file() {
        let image = image();
        let plan = plan(&image, 0x10, &addresses(0, 0)).unwrap();
        assert_eq!(plan.segments[0].data, &image[..]);
        assert_eq!(plan.segments[0].mem_size, 256);
    }

    #[test]
    fn load_addr_above_header_addr_is_refused() {
        let mut a = addresses(0, 0);
        a.load_addr = 0x10_0020;
        assert!(matches!(
            plan(&image(), 0x10, &a),
            Err(LoadError::BadLoadAddresses(_))
        ));
    }

    #[test]
    fn load_start_before_the_file_is_refused() {
        assert!(matches!(
            plan(&image(), 0x8, &addresses(0, 0)),
            Err(LoadError::BadLoadAddresses(_))
        ));
    }

    #[test]
    fn load_end_below_load_addr_is_refused() {
        assert!(matches!(
            plan(&image(), 0x10, &addresses(0xf_0000, 0)),
            Err(LoadError::BadLoadAddresses(
                "load_end_addr lies below load_addr"
            ))
        ));
    }

    #[test]
    fn bss_end_below_loaded_data_is_refused() {
        assert!(matches!(
            plan(&image(), 0x10, &addresses(0x10_0080, 0x10_0040)),
            Err(LoadError::BadLoadAddresses(_))
        ));
    }

    #[test]
    fn load_range_past_the_file_is_truncated() {
        assert!(matches!(
            plan(&image(), 0x10, &addresses(0x10_1000, 0)),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn image_wrapping_past_4_gib_is_refused() {
        let a = LoadAddresses {
            header_addr: 0xffff_ff80,
            load_addr: 0xffff_ff80,
            load_end_addr: 0,
            bss_end_addr: 0,
            entry_addr: 0xffff_ff80,
        };
        assert!(matches!(
            plan(&image(), 0, &a),
            Err(LoadError::BadLoadAddresses(_))
        ));
    }
}
