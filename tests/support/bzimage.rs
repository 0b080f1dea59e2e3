//! Synthetic Linux bzImages for integration tests: a real-mode part of
//! `setup_sects + 1` sectors whose setup header (Documentation/arch/x86/
//! boot.rst) holds the chosen fields, then the protected-mode kernel.

#![allow(dead_code)]

/// The fields of a bzImage's setup header a test chooses; the rest are
/// zero. [`BzImage::new`] gives those of a current x86-32 kernel.
#[derive(Clone, Debug)]
pub struct BzImage {
    /// `version`.
    pub protocol: u16,
    /// `setup_sects` as written (0 means 4).
    pub setup_sects: u8,
    /// `loadflags`.
    pub loadflags: u8,
    /// `code32_start`.
    pub code32_start: u32,
    /// `initrd_addr_max`.
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel`.
    pub relocatable: u8,
    /// `cmdline_size`.
    pub cmdline_size: u32,
    /// `pref_address`.
    pub pref_address: u64,
    /// `init_size`.
    pub init_size: u32,
    /// The protected-mode kernel.
    pub kernel: Vec<u8>,
}

impl BzImage {
    /// A protocol 2.15 relocatable bzImage of `kernel`, loaded at 1 MiB,
    /// needing 1 MiB from there.
    pub fn new(kernel: Vec<u8>) -> BzImage {
        BzImage {
            protocol: 0x020f,
            setup_sects: 4,
            loadflags: 0x01,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x10_0000,
            relocatable: 1,
            cmdline_size: 2047,
            pref_address: 0x10_0000,
            init_size: 0x10_0000,
            kernel,
        }
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let sects = match self.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        let mut image = vec![0u8; (sects + 1) * 512];
        let mut put = |offset: usize, bytes: &[u8]| {
            image[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(0x1f1, &[self.setup_sects]);
        put(
            0x1f4,
            &(self.kernel.len().div_ceil(16) as u32).to_le_bytes(),
        );
        put(0x1fa, &0xffffu16.to_le_bytes()); // vid_mode: normal
        put(0x1fe, &0xaa55u16.to_le_bytes());
        put(0x200, &[0xeb, 0x6a]); // jmp to 0x26c: the header's length
        put(0x202, b"HdrS");
        put(0x206, &self.protocol.to_le_bytes());
        put(0x211, &[self.loadflags]);
        put(0x214, &self.code32_start.to_le_bytes());
        put(0x22c, &self.initrd_addr_max.to_le_bytes());
        put(0x230, &self.kernel_alignment.to_le_bytes());
        put(0x234, &[self.relocatable]);
        put(0x238, &self.cmdline_size.to_le_bytes());
        put(0x258, &self.pref_address.to_le_bytes());
        put(0x260, &self.init_size.to_le_bytes());
        image.extend_from_slice(&self.kernel);
        image
    }
}
