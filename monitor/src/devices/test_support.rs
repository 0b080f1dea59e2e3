//! Helpers shared by the device unit tests.

use super::pic::SharedPic;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Every level devices drive on `pic`'s lines from now on, in order, as
/// (IRQ number, level), whatever the PIC's masks.
pub(crate) fn mirrored_levels(pic: &SharedPic) -> Arc<Mutex<Vec<(u8, bool)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    pic.set_line_mirror(Arc::new(move |irq, level| {
        log.lock().unwrap().push((irq.number(), level));
    }));
    seen
}

/// A writer whose bytes the test can inspect.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
