//! Every instruction form iced-x86 decodes in 32-bit mode, as real
//! encodings found by sweeping prefixes, opcode maps, opcodes and ModRM
//! bytes through the decoder: one register form and one memory form per
//! iced-x86 `Code`. Memory forms name [`DATA`] by `[disp32]` (or
//! `[disp32 + edx]` through a SIB byte, a vector index for VSIB forms).

#![allow(dead_code)]

use iced_x86::{Code, Decoder, DecoderOptions, OpKind};
use std::collections::BTreeMap;

/// Guest address explicit memory operands name.
pub const DATA: u32 = 0x4000;

/// One encoding per decoded form: for every iced-x86 `Code`, a register
/// form and a memory form when they exist.
pub fn every_instruction_form() -> BTreeMap<u32, (Code, Vec<u8>)> {
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
pub fn unreachable_by_decoding(code: Code) -> bool {
    code.op_code().fwait() || matches!(code, Code::Popw_CS | Code::Ud0 | Code::Montmul_16)
}
