//! Kernel command lines that run a shell script in the test initramfs's
//! /init (guests/linux/init runs what follows ` -- `). The kernel hands at
//! most 32 words after ` -- ` to /init and panics on more ("Too many boot
//! init vars"), so the script travels as one base64 word.

#![allow(dead_code)]

/// A kernel command line that runs `script` in the guest's shell.
pub fn append_running(script: &str) -> String {
    format!(
        "console=ttyS0 quiet -- echo {} | base64 -d | sh",
        base64(script.as_bytes())
    )
}

/// Standard base64 (RFC 4648, with padding), as busybox's `base64 -d`
/// reads it.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, b)| w | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(word >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
