//! Confinement: a guest can never write host memory outside its RAM.
//!
//! A canary mapping is placed below 4 GiB in this (the monitor's) process,
//! where a guest register value could name it if the translator ever used a
//! guest register as a host address. Then every instruction form iced-x86
//! can decode in 32-bit mode runs as a one-instruction guest, with every
//! general register holding the canary's address (so an implicit or
//! register-held address such as MASKMOVQ's `DS:[EDI]`, CLZERO's `[EAX]` or
//! a string instruction's `[ESI]`/`[EDI]` names the canary), all MMX/XMM
//! bytes 0xFF (so byte masks select every byte), an explicit memory operand
//! pointing into guest RAM, and a guest CPU that offers every extension the
//! translator can offer. The canary must stay intact, and every guest must
//! stop (at its exit port, with an exception, or by the watchdog).

use iced_x86::{Code, Decoder, DecoderOptions, OpKind};
use monitor::vcpu::{BtVcpu, IoCpu, Platform, Stop};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use translator::GuestIsa;

/// Guest address the explicit memory operands name (inside guest RAM).
const DATA: u32 = 0x4000;
/// Where each test instruction is placed.
const CODE: u32 = 0x1000;
/// The guest stack.
const STACK: u32 = 0x8000;
/// Size of the canary mapping.
const CANARY_LEN: usize = 0x3000;
/// The byte the canary is filled with.
const CANARY_BYTE: u8 = 0xa5;

/// A canary mapping below 4 GiB, filled with [`CANARY_BYTE`].
struct Canary {
    addr: usize,
}

impl Canary {
    fn map() -> Canary {
        for candidate in [0x5a00_0000usize, 0x4000_0000, 0x2000_0000, 0x7000_0000] {
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping;
            // the new anonymous mapping is owned by the returned value.
            let p = unsafe {
                libc::mmap(
                    candidate as *mut libc::c_void,
                    CANARY_LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as usize == candidate {
                // SAFETY: the mapping was just made, CANARY_LEN bytes long.
                unsafe { std::ptr::write_bytes(p as *mut u8, CANARY_BYTE, CANARY_LEN) };
                return Canary { addr: candidate };
            }
        }
        panic!("no free address below 4 GiB for the canary");
    }

    /// The address guest registers hold: the middle page.
    fn target(&self) -> u32 {
        (self.addr + 0x1000) as u32
    }

    fn intact(&self) -> bool {
        // SAFETY: the mapping is alive and CANARY_LEN bytes long.
        let bytes = unsafe { std::slice::from_raw_parts(self.addr as *const u8, CANARY_LEN) };
        bytes.iter().all(|b| *b == CANARY_BYTE)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, CANARY_LEN) };
    }
}

/// One encoding per decoded form: for every iced-x86 `Code`, a register
/// form and a memory form when they exist.
fn every_instruction_form() -> BTreeMap<u32, (Code, Vec<u8>)> {
    let mut forms: BTreeMap<u32, (Code, Vec<u8>)> = BTreeMap::new();
    let mut add = |bytes: &[u8]| {
        let i = Decoder::new(32, bytes, DecoderOptions::NONE).decode();
        if i.is_invalid() {
            return;
        }
        let memory = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
        let key = (i.code() as u32) << 1 | u32::from(memory);
        forms
            .entry(key)
            .or_insert_with(|| (i.code(), bytes[..i.len()].to_vec()));
    };
    let modrms: Vec<u8> = (0..8u8)
        .flat_map(|reg| {
            [0x05 | reg << 3, 0x04 | reg << 3]
                .into_iter()
                .chain((0..8u8).map(move |rm| 0xc0 | reg << 3 | rm))
        })
        .collect();
    let with_modrm = |head: &[u8], modrm: u8| {
        let mut v = head.to_vec();
        v.push(modrm);
        match modrm & 0xc7 {
            // [disp32]
            0x05 => v.extend_from_slice(&DATA.to_le_bytes()),
            // SIB: [disp32 + edx*1] (a vector index for VSIB forms)
            0x04 => {
                v.push(0x15);
                v.extend_from_slice(&DATA.to_le_bytes());
            }
            _ => {}
        }
        v.extend_from_slice(&[0; 8]);
        v
    };
    let prefixes: [&[u8]; 13] = [
        &[],
        &[0x66],
        &[0xf2],
        &[0xf3],
        &[0xf0],
        &[0x66, 0xf2],
        &[0x66, 0xf3],
        &[0x67],
        &[0x66, 0x67],
        &[0x67, 0xf2],
        &[0x67, 0xf3],
        &[0x66, 0x67, 0xf2],
        &[0x9b],
    ];
    for prefix in prefixes {
        for map in [&[][..], &[0x0f], &[0x0f, 0x38], &[0x0f, 0x3a]] {
            for op in 0..=255u8 {
                let mut head = prefix.to_vec();
                head.extend_from_slice(map);
                head.push(op);
                for &m in &modrms {
                    add(&with_modrm(&head, m));
                }
                head.extend_from_slice(&[0; 10]);
                add(&head);
            }
        }
    }
    // 3DNow!: 0F 0F modrm imm8.
    for imm in 0..=255u8 {
        for m in [0x05u8, 0xc1] {
            let mut v = with_modrm(&[0x0f, 0x0f], m);
            v.truncate(if m == 0x05 { 7 } else { 3 });
            v.push(imm);
            add(&v);
        }
    }
    // VEX (C4) and XOP (8F) three-byte escapes.
    for (escape, maps) in [(0xc4u8, [1u8, 2, 3]), (0x8f, [8, 9, 10])] {
        for map in maps {
            for wlpp in 0..16u8 {
                let (w, l, pp) = (wlpp >> 3 & 1, wlpp >> 2 & 1, wlpp & 3);
                let second = w << 7 | 0x78 | l << 2 | pp;
                for op in 0..=255u8 {
                    for &m in &modrms {
                        add(&with_modrm(&[escape, 0xe0 | map, second, op], m));
                    }
                }
            }
        }
    }
    // EVEX, with and without an opmask register.
    for map in [1u8, 2, 3, 5, 6] {
        for variant in 0..96u8 {
            let (w, pp, ll, b, aaa) = (
                variant & 1,
                variant >> 1 & 3,
                (variant >> 3) % 3,
                (variant / 24) & 1,
                (variant / 48) & 1,
            );
            let p0 = 0xf0 | map;
            let p1 = w << 7 | 0x7c | pp;
            let p2 = ll << 5 | b << 4 | 0x08 | aaa;
            for op in 0..=255u8 {
                for &m in &modrms {
                    add(&with_modrm(&[0x62, p0, p1, p2, op], m));
                }
            }
        }
    }
    forms
}

/// The forms iced-x86 decodes without decoder options that the sweep above
/// cannot produce: FWAIT-combined forms (the decoder splits them into WAIT
/// and the no-wait form), POP CS (8086 only) and two encodings that need an
/// exact ModRM-less tail.
fn unreachable_by_decoding(code: Code) -> bool {
    code.op_code().fwait() || matches!(code, Code::Popw_CS | Code::Ud0 | Code::Montmul_16)
}

#[test]
fn sweep_covers_every_form_iced_decodes_in_32bit_mode() {
    let forms = every_instruction_form();
    let found: std::collections::HashSet<Code> = forms.values().map(|(c, _)| *c).collect();
    let missing: Vec<Code> = Code::values()
        .filter(|c| {
            let op = c.op_code();
            op.is_instruction()
                && op.mode32()
                && op.decoder_option() == DecoderOptions::NONE
                && !unreachable_by_decoding(*c)
                && !found.contains(c)
        })
        .collect();
    assert!(missing.is_empty(), "forms the sweep misses: {missing:?}");
}

/// A platform whose port 0xf4 ends the run and that stops the vCPU when
/// the watchdog fires.
struct TestPlatform<'a> {
    stop: &'a AtomicBool,
}

impl Platform for TestPlatform<'_> {
    fn io_in(&mut self, _: &mut IoCpu<'_>, _: u16, _: u8) -> u32 {
        u32::MAX
    }

    fn io_out(&mut self, _: &mut IoCpu<'_>, port: u16, _: u8, _: u32) -> Option<i32> {
        (port == 0xf4).then_some(0)
    }

    fn string_io(
        &mut self,
        _: &mut IoCpu<'_>,
        _: u16,
        _: bool,
        _: &mut dyn backdoor::GuestMemory,
    ) -> bool {
        false
    }

    fn cpuid(&mut self, _: u32, _: u32) -> [u32; 4] {
        [0; 4]
    }

    fn stop_requested(&mut self) -> Option<i32> {
        self.stop.load(Ordering::SeqCst).then_some(libc::SIGALRM)
    }
}

/// Every extension the translator may offer.
fn widest_isa() -> GuestIsa {
    GuestIsa::with(GuestIsa::TRANSLATABLE).expect("translatable extensions are offerable")
}

/// Runs `bytes` followed by `out 0xf4, al` as a guest whose registers all
/// name `target`; returns how it stopped.
fn run_one(bytes: &[u8], target: u32) -> Stop {
    let ram = shadowmmu::GuestRam::new(1).expect("1 MiB of guest RAM");
    let mut code = bytes.to_vec();
    code.extend_from_slice(&[0xe6, 0xf4]);
    ram.write(shadowmmu::GuestPhys(CODE), &code).unwrap();
    let mut vcpu = BtVcpu::new(ram, widest_isa()).expect("vCPU");
    let s = &mut vcpu.state;
    s.eip = CODE;
    s.gpr = [target; 8];
    s.gpr[4] = STACK;
    s.seg_sel = [0x10, 0x08, 0x10, 0x10, 0x10, 0x10];
    for reg in 0..8 {
        for base in [32, 160] {
            let at = base + 16 * reg;
            s.fx.0[at..at + 16].fill(0xff);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel::<()>();
        let stop = &stop;
        scope.spawn(move || {
            if finished.recv_timeout(Duration::from_secs(5)).is_err() {
                stop.store(true, Ordering::SeqCst);
                translator::runtime::request_exit_all();
            }
        });
        let result = vcpu.run(&mut TestPlatform { stop });
        let _ = done.send(());
        result
    })
}

#[test]
fn no_instruction_form_reaches_host_memory_outside_guest_ram() {
    let canary = Canary::map();
    let forms = every_instruction_form();
    let mut broke = Vec::new();
    let mut watchdog = Vec::new();
    for (code, bytes) in forms.values() {
        let stop = run_one(bytes, canary.target());
        if matches!(stop, Stop::Requested { .. }) {
            watchdog.push(*code);
        }
        if !canary.intact() {
            broke.push(format!("{code:?} {bytes:02x?}"));
            // Restore it so that later forms are judged on their own.
            // SAFETY: the canary mapping is alive and CANARY_LEN bytes long.
            unsafe { std::ptr::write_bytes(canary.addr as *mut u8, CANARY_BYTE, CANARY_LEN) };
        }
    }
    assert!(
        broke.is_empty(),
        "{} forms wrote host memory outside guest RAM: {broke:#?}",
        broke.len()
    );
    assert!(
        watchdog.is_empty(),
        "forms that never stopped by themselves: {watchdog:?}"
    );
}
