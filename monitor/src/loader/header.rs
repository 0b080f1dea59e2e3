//! The Multiboot v1 header: where it is, whether it is valid, and what it asks
//! of the boot loader.
//!
//! Invariants: the header is searched for only at 4-byte aligned offsets
//! whose 12 mandatory bytes lie within the first [`SEARCH_LIMIT`] bytes of
//! the image; the first magic with a correct checksum wins. A returned
//! [`MultibootHeader`] has passed the flags check, and has load addresses
//! exactly when flag bit 16 is set.

use super::le::u32_at;
use super::LoadError;

/// The magic that starts a Multiboot v1 header.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The header must lie entirely within this many leading bytes of the image.
pub const SEARCH_LIMIT: usize = 8192;
/// Required bit 0: align boot modules on 4 KiB pages (they always are).
pub const FLAG_PAGE_ALIGN_MODULES: u32 = 1 << 0;
/// Required bit 1: provide `mem_*` and the memory map (always provided).
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Required bit 2: provide a video mode (not supported).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Optional bit 16: the header's address fields say where to load the image.
pub const FLAG_LOAD_ADDRESSES: u32 = 1 << 16;
/// The required bits (0-15) this loader honours.
const HONOURED_REQUIREMENTS: u32 = FLAG_PAGE_ALIGN_MODULES | FLAG_MEMORY_INFO;
/// The requirement half of the flags word.
const REQUIREMENT_BITS: u32 = 0xffff;
/// Magic, flags and checksum.
const MANDATORY_LEN: usize = 12;
/// The mandatory words plus the five address fields of flag bit 16.
const WITH_ADDRESSES_LEN: usize = 32;

/// The address fields a header provides when flag bit 16 is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadAddresses {
    /// Physical address the header's magic is loaded at.
    pub header_addr: u32,
    /// Physical address of the first byte to load.
    pub load_addr: u32,
    /// One past the last byte loaded from the file; 0 means "to end of file".
    pub load_end_addr: u32,
    /// One past the last byte of zero-filled bss; 0 means "no bss".
    pub bss_end_addr: u32,
    /// Physical entry point.
    pub entry_addr: u32,
}

/// A valid Multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the magic.
    pub offset: usize,
    /// The flags word.
    pub flags: u32,
    /// The load addresses, present exactly when flag bit 16 is set.
    pub addresses: Option<LoadAddresses>,
}

/// What a search of the image found.
#[derive(Debug)]
pub enum HeaderSearch {
    /// A header with a correct checksum and flags this loader honours.
    Found(MultibootHeader),
    /// No valid header; the error says why.
    Refused(LoadError),
}

/// Finds the Multiboot header of `image` and checks what it requires.
pub fn find_header(image: &[u8]) -> HeaderSearch {
    let searchable = &image[..image.len().min(SEARCH_LIMIT)];
    let mut first_bad_checksum = None;
    for offset in (0..searchable.len()).step_by(4) {
        let Some((flags, sum)) = magic_at(searchable, offset) else {
            continue;
        };
        if sum == 0 {
            return match check_flags(searchable, offset, flags) {
                Ok(header) => HeaderSearch::Found(header),
                Err(e) => HeaderSearch::Refused(e),
            };
        }
        first_bad_checksum.get_or_insert(LoadError::BadChecksum { offset, sum });
    }
    HeaderSearch::Refused(first_bad_checksum.unwrap_or(LoadError::NoMultibootHeader))
}

/// If a magic starts at `offset`, its flags and the checksum sum (0 when valid).
fn magic_at(searchable: &[u8], offset: usize) -> Option<(u32, u32)> {
    if u32_at(searchable, offset)? != HEADER_MAGIC {
        return None;
    }
    let flags = u32_at(searchable, offset + 4)?;
    let checksum = u32_at(searchable, offset + 8)?;
    Some((
        flags,
        HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum),
    ))
}

fn check_flags(searchable: &[u8], offset: usize, flags: u32) -> Result<MultibootHeader, LoadError> {
    let unsupported = flags & REQUIREMENT_BITS & !HONOURED_REQUIREMENTS;
    if unsupported != 0 {
        return Err(LoadError::UnsupportedFlags { flags, unsupported });
    }
    let addresses = if flags & FLAG_LOAD_ADDRESSES != 0 {
        Some(read_addresses(searchable, offset)?)
    } else {
        None
    };
    Ok(MultibootHeader {
        offset,
        flags,
        addresses,
    })
}

fn read_addresses(searchable: &[u8], offset: usize) -> Result<LoadAddresses, LoadError> {
    let truncated = || LoadError::HeaderTruncated {
        offset,
        file_ended: searchable.len() < SEARCH_LIMIT,
    };
    if offset + WITH_ADDRESSES_LEN > searchable.len() {
        return Err(truncated());
    }
    let field =
        |index: usize| u32_at(searchable, offset + MANDATORY_LEN + 4 * index).ok_or_else(truncated);
    Ok(LoadAddresses {
        header_addr: field(0)?,
        load_addr: field(1)?,
        load_end_addr: field(2)?,
        bss_end_addr: field(3)?,
        entry_addr: field(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::testimage::multiboot_header;

    fn image_with_header_at(offset: usize, header: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; offset];
        image.extend_from_slice(header);
        image
    }

    #[test]
    fn header_is_found_at_an_aligned_offset() {
        let image = image_with_header_at(0x40, &multiboot_header(FLAG_MEMORY_INFO));
        let HeaderSearch::Found(h) = find_header(&image) else {
            panic!("not found")
        };
        assert_eq!(
            (h.offset, h.flags, h.addresses),
            (0x40, FLAG_MEMORY_INFO, None)
        );
    }

    #[test]
    fn header_at_an_unaligned_offset_is_ignored() {
        let image = image_with_header_at(0x42, &multiboot_header(0));
        assert!(matches!(
            find_header(&image),
            HeaderSearch::Refused(LoadError::NoMultibootHeader)
        ));
    }

    #[test]
    fn header_past_8_kib_is_not_found() {
        let image = image_with_header_at(SEARCH_LIMIT - 8, &multiboot_header(0));
        assert!(matches!(
            find_header(&image),
            HeaderSearch::Refused(LoadError::NoMultibootHeader)
        ));
        let image = image_with_header_at(SEARCH_LIMIT - 12, &multiboot_header(0));
        assert!(matches!(find_header(&image), HeaderSearch::Found(_)));
    }

    #[test]
    fn bad_checksum_is_reported_with_its_offset() {
        let mut header = multiboot_header(0);
        header[8] ^= 1;
        let image = image_with_header_at(8, &header);
        match find_header(&image) {
            HeaderSearch::Refused(LoadError::BadChecksum { offset, sum }) => {
                assert_eq!(offset, 8);
                assert_ne!(sum, 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn later_valid_header_wins_over_an_earlier_bad_one() {
        let mut bad = multiboot_header(0);
        bad[8] ^= 1;
        let mut image = image_with_header_at(0, &bad);
        image.extend_from_slice(&multiboot_header(FLAG_PAGE_ALIGN_MODULES));
        let HeaderSearch::Found(h) = find_header(&image) else {
            panic!("not found")
        };
        assert_eq!(h.offset, 12);
    }

    #[test]
    fn video_mode_requirement_is_refused() {
        let image = multiboot_header(FLAG_VIDEO_MODE | FLAG_MEMORY_INFO);
        match find_header(&image) {
            HeaderSearch::Refused(LoadError::UnsupportedFlags { unsupported, .. }) => {
                assert_eq!(unsupported, FLAG_VIDEO_MODE)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn undefined_requirement_bit_is_refused() {
        let image = multiboot_header(1 << 7);
        assert!(matches!(
            find_header(&image),
            HeaderSearch::Refused(LoadError::UnsupportedFlags {
                unsupported: 0x80,
                ..
            })
        ));
    }

    #[test]
    fn undefined_optional_bits_are_accepted() {
        let image = multiboot_header(1 << 20);
        assert!(matches!(find_header(&image), HeaderSearch::Found(_)));
    }

    #[test]
    fn load_addresses_are_read_when_bit_16_is_set() {
        let mut image = multiboot_header(FLAG_LOAD_ADDRESSES);
        for value in [0x10_0000u32, 0x10_0000, 0x10_2000, 0x10_3000, 0x10_0020] {
            image.extend_from_slice(&value.to_le_bytes());
        }
        let HeaderSearch::Found(h) = find_header(&image) else {
            panic!("not found")
        };
        let expected = LoadAddresses {
            header_addr: 0x10_0000,
            load_addr: 0x10_0000,
            load_end_addr: 0x10_2000,
            bss_end_addr: 0x10_3000,
            entry_addr: 0x10_0020,
        };
        assert_eq!(h.addresses, Some(expected));
    }

    #[test]
    fn missing_address_fields_are_refused() {
        let image = multiboot_header(FLAG_LOAD_ADDRESSES);
        assert!(matches!(
            find_header(&image),
            HeaderSearch::Refused(LoadError::HeaderTruncated {
                offset: 0,
                file_ended: true
            })
        ));
    }

    #[test]
    fn address_fields_past_8_kib_are_not_said_to_be_past_the_end_of_the_file() {
        let mut image =
            image_with_header_at(SEARCH_LIMIT - 16, &multiboot_header(FLAG_LOAD_ADDRESSES));
        image.resize(SEARCH_LIMIT + 64, 0);
        match find_header(&image) {
            HeaderSearch::Refused(
                e @ LoadError::HeaderTruncated {
                    file_ended: false, ..
                },
            ) => {
                assert!(
                    e.to_string().ends_with("the first 8192 bytes of the file"),
                    "{e}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
