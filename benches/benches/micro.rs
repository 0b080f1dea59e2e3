//! Criterion micro-benchmarks: the cost of translating guest code (per guest
//! instruction) and the round trip of an exit to the monitor and back.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use monitor::config::VmConfig;
use monitor::cpuid::CpuModel;
use monitor::vcpu::bt::BtVcpu;
use monitor::vcpu::{GuestRegisters, Vcpu, VcpuExit};
use shadowmmu::{GuestPhys, GuestRam};
use translator::{Mode, Stubs, UnitRequest};

/// A straight-line mix of ALU, memory and stack instructions (32-bit code).
fn sample_code() -> Vec<u8> {
    let unit: &[u8] = &[
        0x8b, 0x45, 0x08, // mov eax,[ebp+8]
        0x03, 0x44, 0x8b, 0x04, // add eax,[ebx+ecx*4+4]
        0x89, 0xc2, // mov edx,eax
        0xc1, 0xea, 0x03, // shr edx,3
        0x31, 0xd0, // xor eax,edx
        0x50, // push eax
        0x8d, 0x34, 0x16, // lea esi,[esi+edx]
        0x0f, 0xaf, 0xc6, // imul eax,esi
        0x5a, // pop edx
        0x88, 0x26, // mov [esi],ah
        0x41, // inc ecx
    ];
    let mut code = Vec::new();
    for _ in 0..5 {
        code.extend_from_slice(unit);
    }
    code.push(0xc3); // ret
    code.resize(4096 + 16, 0x90);
    code
}

fn translation_cost(c: &mut Criterion) {
    let code = sample_code();
    let stubs = Stubs {
        enter: 0x1000,
        exit_common: 0x2000,
        exit_saved: 0x3000,
        poll: 0x0f00,
        return_sentinel: 0x4000,
    };
    let req = UnitRequest {
        eip: 0x10_0000,
        code: &code,
        code_before: &[],
        followed_branches: 0,
        page_end: 0x10_1000,
        mode: Mode {
            flat: true,
            cpl0: true,
            ..Mode::default()
        },
        host_base: 0x4000,
        stubs,
        max_insns: 64,
        count_indirect: None,
        count_entries: None,
        ibtc_tag: 0,
        shared_ibtc_tags: 0,
        isa: translator::GuestIsa::baseline(),
        emulate_tokens_from: Some(0),
        cpuid: None,
        ignored_ports: None,
        transitions: None,
        event: None,
        divide_error: None,
        split_events: false,
        paged: None,
        self_check: false,
        soft_access: &[],
        return_stack: false,
        superblock_branches: 0,
        fold_displacements: true,
        unfolded: &[],
        chain_slots_from: None,
        segment_loads: &[],
        verw: &[],
        jump_predictions: &[],
        jump_tables: &[],
        branch_predictions: &[],
        learning_sites: &[],
        inline_leaves: true,
        pc_thunks: None,
    };
    let insns = translator::translate(&req)
        .expect("sample translates")
        .insns
        .len() as u64;
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(insns));
    g.bench_function("unit of 56 guest instructions", |b| {
        b.iter(|| translator::translate(&req).unwrap())
    });
    g.finish();
}

fn exit_round_trip(c: &mut Criterion) {
    let ram = GuestRam::new(4).unwrap();
    // 0x1000: out 0x80, al ; jmp 0x1000
    ram.write(GuestPhys(0x1000), &[0xe6, 0x80, 0xeb, 0xfc])
        .unwrap();
    let model = CpuModel::new(&VmConfig::default(), &|_, _| [0; 4]).unwrap();
    let mut vcpu = BtVcpu::new(ram, model).unwrap();
    vcpu.set_registers(&GuestRegisters {
        gpr: [0; 8],
        eip: 0x1000,
        eflags: 2,
    });
    c.bench_function("exit round trip (OUT to an unclaimed port)", |b| {
        b.iter(|| {
            assert!(matches!(vcpu.run(), VcpuExit::IoOut { port: 0x80, .. }));
        })
    });
}

criterion_group!(benches, translation_cost, exit_round_trip);
criterion_main!(benches);
