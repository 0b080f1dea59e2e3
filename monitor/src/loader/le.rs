//! Bounds-checked little-endian field reads from an untrusted byte image.
//!
//! Invariant: every read either returns the field or `None`; nothing here
//! indexes past the end of the slice or overflows an offset.

/// The little-endian `u16` at `offset`, if the image holds all of it.
pub(super) fn u16_at(image: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(2)?;
    let bytes = image.get(offset..end)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

/// The little-endian `u32` at `offset`, if the image holds all of it.
pub(super) fn u32_at(image: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let bytes = image.get(offset..end)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The bytes `offset..offset + len`, if the image holds all of them.
pub(super) fn bytes_at(image: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    image.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_little_endian() {
        let image = [0x78, 0x56, 0x34, 0x12];
        assert_eq!(u32_at(&image, 0), Some(0x1234_5678));
        assert_eq!(u16_at(&image, 2), Some(0x1234));
    }

    #[test]
    fn reads_past_the_end_give_none() {
        let image = [0u8; 6];
        assert_eq!(u32_at(&image, 3), None);
        assert_eq!(u16_at(&image, 5), None);
        assert_eq!(u32_at(&image, usize::MAX), None);
        assert_eq!(bytes_at(&image, 4, 3), None);
        assert_eq!(bytes_at(&image, u64::MAX, 1), None);
        assert_eq!(bytes_at(&image, 4, 2), Some(&image[4..6]));
    }
}
