//! Tests of the host side: command register conventions and GuestRPC as
//! open-vm-tools' message layer drives it.

use super::*;
use crate::abi::{msg_type, proto, status};
use crate::facts::{FixedClock, HostTime};
use crate::memory::{FlatMemory, MemFault};
use crate::regs::{high_half, join_halves};
use crate::NO_VALUE_FOUND;

fn facts() -> HostFacts {
    HostFacts {
        tsc_hz: 0x0000_0001_2345_6789,
        bus_hz: 66_000_000,
        mem_size_mib: 256,
        uuid: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        product_type: abi::product::SCALABLE_SERVER,
        hw_version: 21,
        build_number: 424242,
        vcpu_info: 1 << 3 | 1 << 31,
        max_time_lag_us: 1500,
        interrupt_lag_us: 77,
        high_bandwidth: true,
        cookie_seed: 99,
    }
}

fn host() -> Backdoor {
    Backdoor::new(facts(), [("guestinfo.preset", "p")]).with_clock(FixedClock(HostTime {
        secs: 0x1_0000_0005,
        micros: 123,
    }))
}

fn call(host: &mut Backdoor, command: u16, subcommand: u16, ebx: u32, cpl: u8) -> Regs {
    let mut regs = Regs::backdoor_call(command, subcommand, ebx);
    regs.esi = 0x5151_5151;
    regs.edi = 0xD1D1_D1D1;
    regs.ebp = 0xB0B0_B0B0;
    assert!(host.port_in(&mut regs, cpl));
    regs
}

// ---------------------------------------------------------------- commands

#[test]
fn getversion_returns_six_magic_and_product_type() {
    let regs = call(&mut host(), cmd::GETVERSION, 0, 0, 3);
    assert_eq!(regs.eax, 6);
    assert_eq!(regs.ebx, abi::BDOOR_MAGIC);
    assert_eq!(regs.ecx, abi::product::SCALABLE_SERVER);
}

#[test]
fn access_without_magic_returns_all_ones_and_leaves_other_registers() {
    let mut regs = Regs::backdoor_call(cmd::GETVERSION, 0, 0x1234);
    regs.eax = 0;
    let before = regs;
    assert!(host().port_in(&mut regs, 0));
    assert_eq!(
        regs,
        Regs {
            eax: abi::ALL_ONES,
            ..before
        }
    );
}

#[test]
fn unknown_command_returns_all_ones() {
    let mut regs = Regs::backdoor_call(0x7777, 0, 0x1234);
    let before = regs;
    assert!(host().port_in(&mut regs, 0));
    assert_eq!(
        regs,
        Regs {
            eax: abi::ALL_ONES,
            ..before
        }
    );
}

#[test]
fn other_ports_are_not_backdoor_accesses() {
    let mut regs = Regs::backdoor_call(cmd::GETVERSION, 0, 0);
    regs.edx = 0x5659;
    let before = regs;
    assert!(!host().port_in(&mut regs, 0));
    assert_eq!(regs, before);
}

#[test]
fn port_out_is_served_like_port_in() {
    let mut regs = Regs::backdoor_call(cmd::GETVERSION, 0, 0);
    assert!(host().port_out(&mut regs, 3));
    assert_eq!(regs.ebx, abi::BDOOR_MAGIC);
}

#[test]
fn cpl0_only_command_is_ignored_from_user_mode() {
    for &command in abi::cmd::CPL0_ONLY {
        let mut regs = Regs::backdoor_call(command, 0, 5);
        let before = regs;
        assert!(host().port_in(&mut regs, 3));
        assert_eq!(
            regs,
            Regs {
                eax: abi::ALL_ONES,
                ..before
            },
            "command {command}"
        );
    }
}

#[test]
fn getmhz_returns_tsc_megahertz() {
    let regs = call(&mut host(), cmd::GETMHZ, 0, 0, 3);
    assert_eq!(regs.eax, (0x0000_0001_2345_6789u64 / 1_000_000) as u32);
}

#[test]
fn gethz_splits_tsc_hz_over_eax_ebx_and_bus_hz_in_ecx() {
    let regs = call(&mut host(), cmd::GETHZ, 0, 0, 3);
    assert_eq!(regs.eax, 0x2345_6789);
    assert_eq!(regs.ebx, 1);
    assert_eq!(regs.ecx, 66_000_000);
}

#[test]
fn getuuid_spreads_the_uuid_little_endian_over_four_registers() {
    let regs = call(&mut host(), cmd::GETUUID, 0, 0, 3);
    assert_eq!(
        [regs.eax, regs.ebx, regs.ecx, regs.edx],
        [0x0403_0201, 0x0807_0605, 0x0C0B_0A09, 0x100F_0E0D]
    );
}

#[test]
fn getmemsize_hwversion_buildnum_report_the_facts() {
    let mut h = host();
    assert_eq!(call(&mut h, cmd::GETMEMSIZE, 0, 0, 3).eax, 256);
    assert_eq!(call(&mut h, cmd::GETHWVERSION, 0, 0, 3).eax, 21);
    assert_eq!(call(&mut h, cmd::GETBUILDNUM, 0, 0, 3).eax, 424_242);
}

#[test]
fn get_vcpu_info_clears_the_reserved_bit() {
    assert_eq!(call(&mut host(), cmd::GET_VCPU_INFO, 0, 0, 0).eax, 1 << 3);
}

#[test]
fn gettime_reports_all_ones_when_seconds_overflow_32_bits() {
    let regs = call(&mut host(), cmd::GETTIME, 0, 0, 3);
    assert_eq!(regs.eax, abi::ALL_ONES);
    assert_eq!(regs.ebx, 123);
    assert_eq!(regs.ecx, 1500);
}

#[test]
fn gettime_reports_32_bit_seconds() {
    let mut h = host().with_clock(FixedClock(HostTime {
        secs: 1_700_000_000,
        micros: 5,
    }));
    let regs = call(&mut h, cmd::GETTIME, 0, 0, 3);
    assert_eq!((regs.eax, regs.ebx, regs.edx), (1_700_000_000, 5, 0));
}

#[test]
fn gettimefull_keeps_magic_in_eax_and_puts_seconds_in_esi_edx() {
    let regs = call(&mut host(), cmd::GETTIMEFULL, 0, 0, 3);
    assert_eq!(regs.eax, abi::BDOOR_MAGIC);
    assert_eq!((regs.esi, regs.edx), (1, 5));
    assert_eq!((regs.ebx, regs.ecx), (123, 1500));
    assert_eq!(regs.edi, 0xD1D1_D1D1);
}

#[test]
fn gettimefull_with_lag_adds_interrupt_lag_in_edi() {
    let regs = call(&mut host(), cmd::GETTIMEFULL_WITH_LAG, 0, 0, 3);
    assert_eq!(regs.eax, abi::BDOOR_MAGIC);
    assert_eq!((regs.esi, regs.edx, regs.edi), (1, 5, 77));
}

#[test]
fn stopcatchup_changes_no_register_and_is_recorded() {
    let mut h = host();
    let mut regs = Regs::backdoor_call(cmd::STOPCATCHUP, 0, 9);
    let before = regs;
    assert!(h.port_in(&mut regs, 3));
    assert_eq!(regs, before);
    assert_eq!(h.drain_events(), [Event::StopCatchup]);
}

// ----------------------------------------------------------------- nesting

#[test]
fn nesting_query_returns_version_two_from_any_cpl() {
    assert_eq!(
        call(&mut host(), cmd::NESTING_CONTROL, nesting::QUERY, 0, 3).eax,
        2
    );
}

#[test]
fn nesting_subcommand_past_max_returns_all_ones() {
    assert_eq!(
        call(&mut host(), cmd::NESTING_CONTROL, 3, 0, 0).eax,
        abi::ALL_ONES
    );
}

#[test]
fn restrict_from_user_mode_is_ignored() {
    let mut h = host();
    let regs = call(
        &mut h,
        cmd::NESTING_CONTROL,
        nesting::RESTRICT_BACKDOOR,
        0,
        3,
    );
    assert_eq!(regs.eax, abi::ALL_ONES);
    assert!(!h.restricted());
}

#[test]
fn restricted_backdoor_refuses_user_mode_until_opened() {
    let mut h = host();
    call(
        &mut h,
        cmd::NESTING_CONTROL,
        nesting::RESTRICT_BACKDOOR,
        0,
        0,
    );
    assert!(h.restricted());
    let mut user = Regs::backdoor_call(cmd::GETVERSION, 0, 0);
    assert!(!h.port_in(&mut user, 3));
    let mut memory = FlatMemory::new(16);
    let mut hb = Regs {
        edx: 0x5659,
        ..Regs::backdoor_call(0, 0, 0)
    };
    assert_eq!(h.hb_in(&mut hb, 3, &mut memory), None);
    assert_eq!(call(&mut h, cmd::GETVERSION, 0, 0, 0).ebx, abi::BDOOR_MAGIC);
    let opened = call(&mut h, cmd::NESTING_CONTROL, nesting::OPEN_BACKDOOR, 0, 0);
    assert_eq!(opened.eax, NESTING_CONTROL_DONE);
    assert!(h.port_in(&mut user, 3));
    assert_eq!(
        h.drain_events(),
        [
            Event::NestingRestricted(true),
            Event::NestingRestricted(false)
        ]
    );
}

// ------------------------------------------------------------- GuestRPC

/// A guest-side channel driven the way open-vm-tools' message.c does.
struct Client {
    id: u16,
    cookie_high: u32,
    cookie_low: u32,
}

fn message(h: &mut Backdoor, kind: u16, id: u16, cookies: (u32, u32), ebx: u32) -> Regs {
    let mut regs = Regs::backdoor_call(cmd::MESSAGE, kind, ebx);
    regs.edx = join_halves(abi::BDOOR_PORT, id);
    regs.esi = cookies.0;
    regs.edi = cookies.1;
    assert!(h.port_in(&mut regs, 3));
    regs
}

fn status_of(regs: &Regs) -> u16 {
    high_half(regs.ecx)
}

impl Client {
    fn open(h: &mut Backdoor, protocol: u32) -> Option<Client> {
        let regs = message(h, msg_type::OPEN, 0, (0, 0), protocol | proto::FLAG_COOKIE);
        (status_of(&regs) & status::SUCCESS != 0).then(|| Client {
            id: regs.channel(),
            cookie_high: regs.esi,
            cookie_low: regs.edi,
        })
    }

    fn call(&self, h: &mut Backdoor, kind: u16, ebx: u32) -> Regs {
        message(h, kind, self.id, (self.cookie_high, self.cookie_low), ebx)
    }

    fn send_low_bandwidth(&self, h: &mut Backdoor, data: &[u8]) -> bool {
        let sized = self.call(h, msg_type::SENDSIZE, data.len() as u32);
        if status_of(&sized) & status::SUCCESS == 0 {
            return false;
        }
        data.chunks(4).all(|chunk| {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            let regs = self.call(h, msg_type::SENDPAYLOAD, u32::from_le_bytes(word));
            status_of(&regs) & status::SUCCESS != 0
        })
    }

    fn receive_low_bandwidth(&self, h: &mut Backdoor) -> Option<Vec<u8>> {
        let sized = self.call(h, msg_type::RECVSIZE, 0);
        if status_of(&sized) & status::SUCCESS == 0 {
            return None;
        }
        if status_of(&sized) & status::DORECV == 0 {
            return Some(Vec::new());
        }
        assert_eq!(sized.channel(), msg_type::SENDSIZE);
        let size = sized.ebx as usize;
        let mut out = Vec::new();
        while out.len() < size {
            let regs = self.call(h, msg_type::RECVPAYLOAD, u32::from(status::SUCCESS));
            if status_of(&regs) & status::SUCCESS == 0 {
                return None;
            }
            assert_eq!(regs.channel(), msg_type::SENDPAYLOAD);
            let take = (size - out.len()).min(4);
            out.extend_from_slice(&regs.ebx.to_le_bytes()[..take]);
        }
        let done = self.call(h, msg_type::RECVSTATUS, u32::from(status::SUCCESS));
        (status_of(&done) & status::SUCCESS != 0).then_some(out)
    }

    fn rpc(&self, h: &mut Backdoor, request: &str) -> String {
        assert!(self.send_low_bandwidth(h, request.as_bytes()));
        String::from_utf8(self.receive_low_bandwidth(h).expect("reply")).unwrap()
    }

    fn hb_regs(&self, ebx_status: u16, count: u32) -> Regs {
        Regs {
            eax: abi::BDOOR_MAGIC,
            ebx: join_halves(hb_cmd::MESSAGE, ebx_status),
            ecx: count,
            edx: join_halves(abi::BDOORHB_PORT, self.id),
            ..Regs::default()
        }
    }

    /// SENDSIZE then `rep outsb` of the message placed at `at` in memory.
    fn send_high_bandwidth(
        &self,
        h: &mut Backdoor,
        mem: &mut FlatMemory,
        at: u32,
        data: &[u8],
    ) -> Regs {
        let sized = self.call(h, msg_type::SENDSIZE, data.len() as u32);
        assert_ne!(status_of(&sized) & status::HB, 0);
        mem.write(at, data).unwrap();
        let mut regs = self.hb_regs(status::SUCCESS, data.len() as u32);
        regs.ebp = self.cookie_high;
        regs.edi = self.cookie_low;
        regs.esi = at;
        let moved = h.hb_out(&mut regs, 3, mem).expect("backdoor access");
        assert_eq!(
            moved,
            if high_half(regs.ebx) == status::SUCCESS {
                data.len() as u32
            } else {
                0
            }
        );
        regs
    }

    /// RECVSIZE then `rep insb` of the reply to `at`, then RECVSTATUS.
    fn receive_high_bandwidth(&self, h: &mut Backdoor, mem: &mut FlatMemory, at: u32) -> Vec<u8> {
        let sized = self.call(h, msg_type::RECVSIZE, 0);
        assert_ne!(status_of(&sized) & status::DORECV, 0);
        assert_ne!(status_of(&sized) & status::HB, 0);
        let size = sized.ebx;
        let mut regs = self.hb_regs(status::SUCCESS, size);
        regs.esi = self.cookie_high;
        regs.ebp = self.cookie_low;
        regs.edi = at;
        assert_eq!(h.hb_in(&mut regs, 3, mem), Some(size));
        assert_eq!(high_half(regs.ebx), status::SUCCESS);
        assert_eq!((regs.ecx, regs.edi), (0, at + size));
        let done = self.call(h, msg_type::RECVSTATUS, u32::from(status::SUCCESS));
        assert_eq!(status_of(&done) & status::SUCCESS, status::SUCCESS);
        mem.bytes[at as usize..(at + size) as usize].to_vec()
    }

    fn close(&self, h: &mut Backdoor) -> u16 {
        status_of(&self.call(h, msg_type::CLOSE, 0))
    }
}

#[test]
fn open_returns_channel_id_in_edx_high_and_cookies_in_esi_edi() {
    let mut h = host();
    let first = Client::open(&mut h, proto::RPCI).unwrap();
    let second = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!((first.id, second.id), (0, 1));
    assert_ne!(
        (first.cookie_high, first.cookie_low),
        (second.cookie_high, second.cookie_low)
    );
    assert_eq!(h.open_channels(), 2);
}

#[test]
fn open_with_unknown_protocol_fails() {
    let regs = message(&mut host(), msg_type::OPEN, 0, (0, 0), 0x1234_5678);
    assert_eq!(status_of(&regs), 0);
}

#[test]
fn ninth_channel_is_refused_and_closing_one_frees_a_slot() {
    let mut h = host();
    let clients: Vec<_> = (0..8)
        .map(|_| Client::open(&mut h, proto::RPCI).unwrap())
        .collect();
    assert!(Client::open(&mut h, proto::RPCI).is_none());
    assert_eq!(clients[3].close(&mut h), status::SUCCESS);
    assert_eq!(Client::open(&mut h, proto::RPCI).unwrap().id, 3);
}

#[test]
fn wrong_cookie_fails_without_touching_the_channel() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    let forged = Client {
        cookie_low: client.cookie_low ^ 1,
        ..client
    };
    assert_eq!(status_of(&forged.call(&mut h, msg_type::SENDSIZE, 4)), 0);
    assert_eq!(forged.close(&mut h), 0);
    assert_eq!(h.open_channels(), 1);
}

#[test]
fn channel_opened_without_cookie_flag_accepts_any_cookies() {
    let mut h = host();
    let regs = message(&mut h, msg_type::OPEN, 0, (0, 0), proto::RPCI);
    assert_eq!(status_of(&regs), status::SUCCESS);
    let client = Client {
        id: regs.channel(),
        cookie_high: 7,
        cookie_low: 8,
    };
    assert_eq!(client.rpc(&mut h, "info-get guestinfo.preset"), "1 p");
}

#[test]
fn rpci_info_set_then_info_get_round_trips_over_low_bandwidth() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(
        client.rpc(&mut h, "info-set guestinfo.nestmon.test hello"),
        "1 "
    );
    assert_eq!(
        client.rpc(&mut h, "info-get guestinfo.nestmon.test"),
        "1 hello"
    );
    assert_eq!(client.rpc(&mut h, "no-such-thing"), "0 Unknown command");
    assert_eq!(h.guestinfo().get("guestinfo.nestmon.test"), Some("hello"));
    assert!(h
        .guestinfo_json()
        .contains("\"guestinfo.nestmon.test\":\"hello\""));
}

#[test]
fn sendsize_reply_advertises_high_bandwidth_only_when_enabled() {
    let mut h = Backdoor::new(
        HostFacts {
            high_bandwidth: false,
            ..facts()
        },
        Vec::<(&str, &str)>::new(),
    );
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(
        status_of(&client.call(&mut h, msg_type::SENDSIZE, 3)),
        status::SUCCESS
    );
    let mut h2 = host();
    let client2 = Client::open(&mut h2, proto::RPCI).unwrap();
    assert_eq!(
        status_of(&client2.call(&mut h2, msg_type::SENDSIZE, 3)),
        status::SUCCESS | status::HB
    );
}

#[test]
fn sendsize_past_64_kib_fails() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(
        status_of(&client.call(&mut h, msg_type::SENDSIZE, 64 * 1024 + 1)),
        0
    );
    assert_eq!(h.buffered_bytes(), "preset".len() + 1);
}

#[test]
fn sendpayload_without_sendsize_fails() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(
        status_of(&client.call(&mut h, msg_type::SENDPAYLOAD, 0x41414141)),
        0
    );
}

#[test]
fn recvpayload_past_the_reply_fails() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert!(client.send_low_bandwidth(&mut h, b"info-get guestinfo.preset"));
    let sized = client.call(&mut h, msg_type::RECVSIZE, 0);
    assert_eq!(sized.ebx, 3);
    assert_eq!(
        status_of(&client.call(&mut h, msg_type::RECVPAYLOAD, 1)),
        status::SUCCESS
    );
    assert_eq!(status_of(&client.call(&mut h, msg_type::RECVPAYLOAD, 1)), 0);
}

#[test]
fn recvstatus_without_reply_fails() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(status_of(&client.call(&mut h, msg_type::RECVSTATUS, 1)), 0);
}

#[test]
fn unknown_message_type_fails() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(status_of(&client.call(&mut h, 7, 0)), 0);
    assert_eq!(status_of(&client.call(&mut h, 0xFFFF, 0)), 0);
}

#[test]
fn empty_message_gets_an_immediate_reply() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(client.rpc(&mut h, ""), "0 Unknown command");
}

#[test]
fn message_to_a_closed_channel_fails() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(client.close(&mut h), status::SUCCESS);
    assert_eq!(status_of(&client.call(&mut h, msg_type::RECVSIZE, 0)), 0);
    assert_eq!(client.close(&mut h), 0);
}

#[test]
fn channel_id_out_of_range_fails() {
    let regs = message(&mut host(), msg_type::RECVSIZE, 0xFFFF, (0, 0), 0);
    assert_eq!(status_of(&regs), 0);
}

#[test]
fn high_bandwidth_send_and_receive_round_trip() {
    let mut h = host();
    let mut mem = FlatMemory::new(4096);
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    let sent =
        client.send_high_bandwidth(&mut h, &mut mem, 0x100, b"info-set guestinfo.hb big value");
    assert_eq!(high_half(sent.ebx), status::SUCCESS);
    assert_eq!((sent.ecx, sent.esi), (0, 0x100 + 31));
    assert_eq!(
        client.receive_high_bandwidth(&mut h, &mut mem, 0x800),
        b"1 "
    );
    client.send_high_bandwidth(&mut h, &mut mem, 0x100, b"info-get guestinfo.hb");
    assert_eq!(
        client.receive_high_bandwidth(&mut h, &mut mem, 0x800),
        b"1 big value"
    );
    assert_eq!(h.counters().high_bandwidth_transfers, 4);
    assert_eq!(h.counters().rpci_requests, 2);
}

#[test]
fn high_bandwidth_send_with_wrong_count_fails_and_moves_nothing() {
    let mut h = host();
    let mut mem = FlatMemory::new(64);
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    client.call(&mut h, msg_type::SENDSIZE, 8);
    let mut regs = client.hb_regs(status::SUCCESS, 9);
    regs.ebp = client.cookie_high;
    regs.edi = client.cookie_low;
    assert_eq!(h.hb_out(&mut regs, 3, &mut mem), Some(0));
    assert_eq!(high_half(regs.ebx), 0);
    assert_eq!(regs.ecx, 9);
}

#[test]
fn high_bandwidth_send_from_unmapped_memory_fails() {
    struct Faulting;
    impl GuestMemory for Faulting {
        fn read(&mut self, linear: u32, _: &mut [u8]) -> Result<(), MemFault> {
            Err(MemFault { linear })
        }
        fn write(&mut self, linear: u32, _: &[u8]) -> Result<(), MemFault> {
            Err(MemFault { linear })
        }
    }
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    client.call(&mut h, msg_type::SENDSIZE, 4);
    let mut regs = client.hb_regs(status::SUCCESS, 4);
    regs.ebp = client.cookie_high;
    regs.edi = client.cookie_low;
    assert_eq!(h.hb_out(&mut regs, 3, &mut Faulting), Some(0));
    assert_eq!(high_half(regs.ebx), 0);
    assert_eq!(status_of(&client.call(&mut h, msg_type::SENDPAYLOAD, 0)), 0);
}

/// RPCs `request` over a fresh RPCI channel and asks for the reply's size,
/// so that a high-bandwidth receive of `size` bytes may follow.
fn pending_reply(h: &mut Backdoor, request: &[u8]) -> (Client, u32) {
    let client = Client::open(h, proto::RPCI).unwrap();
    assert!(client.send_low_bandwidth(h, request));
    let sized = client.call(h, msg_type::RECVSIZE, 0);
    assert_ne!(status_of(&sized) & status::DORECV, 0);
    assert_ne!(status_of(&sized) & status::HB, 0);
    (client, sized.ebx)
}

/// `rep insb` of `size` bytes of the reply to `destination`.
fn receive_regs(client: &Client, size: u32, destination: u32) -> Regs {
    let mut regs = client.hb_regs(status::SUCCESS, size);
    regs.esi = client.cookie_high;
    regs.ebp = client.cookie_low;
    regs.edi = destination;
    regs
}

#[test]
fn high_bandwidth_receive_crossing_the_end_of_memory_fails_and_writes_nothing() {
    let mut h = host();
    let (client, size) = pending_reply(&mut h, b"info-get guestinfo.preset");
    assert_eq!(size, 3, "\"1 p\"");
    let mut mem = FlatMemory {
        bytes: vec![0xee; 64],
    };
    let mut regs = receive_regs(&client, size, 62);
    assert_eq!(h.hb_in(&mut regs, 3, &mut mem), Some(0));
    assert_eq!(high_half(regs.ebx), 0, "the guest is told it failed");
    assert_eq!((regs.ecx, regs.edi), (size, 62), "nothing moved");
    assert_eq!(mem.bytes, vec![0xee; 64], "memory untouched");
    let mut again = receive_regs(&client, size, 8);
    assert_eq!(h.hb_in(&mut again, 3, &mut mem), Some(size));
    assert_eq!(&mem.bytes[8..11], b"1 p", "the reply is still there");
}

#[test]
fn high_bandwidth_receive_into_unmapped_memory_fails_and_keeps_the_reply() {
    struct Faulting;
    impl GuestMemory for Faulting {
        fn read(&mut self, linear: u32, _: &mut [u8]) -> Result<(), MemFault> {
            Err(MemFault { linear })
        }
        fn write(&mut self, linear: u32, _: &[u8]) -> Result<(), MemFault> {
            Err(MemFault { linear })
        }
    }
    let mut h = host();
    let (client, size) = pending_reply(&mut h, b"info-get guestinfo.preset");
    let mut regs = receive_regs(&client, size, 0x1000);
    assert_eq!(h.hb_in(&mut regs, 3, &mut Faulting), Some(0));
    assert_eq!(high_half(regs.ebx), 0);
    let mut mem = FlatMemory::new(64);
    let mut again = receive_regs(&client, size, 0);
    assert_eq!(h.hb_in(&mut again, 3, &mut mem), Some(size));
    assert_eq!(&mem.bytes[..3], b"1 p");
}

#[test]
fn high_bandwidth_with_wrong_cookie_fails() {
    let mut h = host();
    let mut mem = FlatMemory::new(64);
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    client.call(&mut h, msg_type::SENDSIZE, 4);
    let mut regs = client.hb_regs(status::SUCCESS, 4);
    regs.ebp = client.cookie_high ^ 1;
    regs.edi = client.cookie_low;
    assert_eq!(h.hb_out(&mut regs, 3, &mut mem), Some(0));
    assert_eq!(high_half(regs.ebx), 0);
}

#[test]
fn high_bandwidth_vassert_and_missing_magic_are_not_served() {
    let mut h = host();
    let mut mem = FlatMemory::new(64);
    let mut regs = Regs {
        eax: abi::BDOOR_MAGIC,
        ebx: join_halves(hb_cmd::VASSERT, status::SUCCESS),
        edx: u32::from(abi::BDOORHB_PORT),
        ..Regs::default()
    };
    assert_eq!(h.hb_out(&mut regs, 0, &mut mem), Some(0));
    assert_eq!(high_half(regs.ebx), 0);
    let mut no_magic = Regs {
        edx: u32::from(abi::BDOORHB_PORT),
        ..Regs::default()
    };
    assert_eq!(h.hb_in(&mut no_magic, 0, &mut mem), None);
}

#[test]
fn tclo_empty_poll_gets_no_message() {
    let mut h = host();
    let tclo = Client::open(&mut h, proto::TCLO).unwrap();
    assert!(tclo.send_low_bandwidth(&mut h, b""));
    let sized = tclo.call(&mut h, msg_type::RECVSIZE, 0);
    assert_eq!(status_of(&sized), status::SUCCESS);
    assert_eq!(sized.ebx, 0);
}

#[test]
fn tclo_delivers_queued_commands_and_records_replies() {
    let mut h = host();
    h.queue_tclo_command(TcloCommand::Reset).unwrap();
    h.queue_tclo_command(TcloCommand::Ping).unwrap();
    assert_eq!(h.pending_tclo(), 2);
    let tclo = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!(tclo.rpc(&mut h, ""), "reset");
    assert_eq!(tclo.rpc(&mut h, "OK ATR toolbox"), "ping");
    assert_eq!(tclo.rpc(&mut h, "OK "), "");
    assert_eq!(
        h.drain_events(),
        [
            Event::TcloReply {
                command: "reset".into(),
                reply: "OK ATR toolbox".into()
            },
            Event::TcloReply {
                command: "ping".into(),
                reply: "OK ".into()
            },
        ]
    );
}

#[test]
fn greeted_tclo_channel_gets_reset_then_capabilities_register_first() {
    let mut h = host();
    h.greet_tclo_channels(&[TcloCommand::Reset, TcloCommand::CapabilitiesRegister]);
    h.queue_tclo_command(TcloCommand::Ping).unwrap();
    let rpci = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(h.pending_tclo(), 1, "an RPCI channel is not greeted");
    let tclo = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!(tclo.rpc(&mut h, ""), "reset");
    assert_eq!(rpci.rpc(&mut h, "log vmsvc: Version: build-1"), "1 ");
    assert_eq!(tclo.rpc(&mut h, "OK ATR vmsvc"), "Capabilities_Register");
    assert_eq!(tclo.rpc(&mut h, "OK "), "ping");
    assert_eq!(tclo.rpc(&mut h, "OK "), "");
    assert_eq!(tclo.rpc(&mut h, ""), "");
    let c = h.counters();
    assert_eq!(
        (
            c.rpci_requests,
            c.tclo_channels_opened,
            c.tclo_polls,
            c.tclo_commands_sent,
            c.high_bandwidth_transfers
        ),
        (1, 1, 5, 3, 0)
    );
    // OPENs, and every SENDSIZE, SENDPAYLOAD, RECVSIZE, RECVPAYLOAD and
    // RECVSTATUS of the messages above.
    assert!(c.low_bandwidth_calls > 20, "{c:?}");
    // A channel opened again (Tools restarted) is greeted again.
    let again = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!(again.rpc(&mut h, ""), "reset");
    assert_eq!(h.counters().tclo_channels_opened, 2);
}

#[test]
fn the_tools_service_polls_once_its_channel_answered_reset_with_toolbox() {
    let mut h = host();
    h.greet_tclo_channels(&[TcloCommand::Reset, TcloCommand::CapabilitiesRegister]);
    assert!(!h.tools_service_polling());
    let tclo = Client::open(&mut h, proto::TCLO).unwrap();
    assert!(!h.tools_service_polling(), "opened, not yet answered");
    assert_eq!(tclo.rpc(&mut h, ""), "reset");
    assert!(!h.tools_service_polling(), "reset sent, not yet answered");
    assert_eq!(tclo.rpc(&mut h, "OK ATR toolbox"), "Capabilities_Register");
    assert!(h.tools_service_polling());
    assert_eq!(tclo.rpc(&mut h, "OK "), "");
    assert!(h.tools_service_polling());
    tclo.close(&mut h);
    assert!(!h.tools_service_polling(), "the loop closed its channel");
}

#[test]
fn a_user_session_loop_is_not_the_tools_service() {
    let mut h = host();
    h.greet_tclo_channels(&[TcloCommand::Reset]);
    let user = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!(user.rpc(&mut h, ""), "reset");
    assert_eq!(user.rpc(&mut h, "OK ATR toolbox-dnd"), "");
    assert!(!h.tools_service_polling());
}

#[test]
fn os_halt_for_the_service_goes_to_its_channel_and_its_reply_is_recorded() {
    let mut h = host();
    h.greet_tclo_channels(&[TcloCommand::Reset]);
    let user = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!(user.rpc(&mut h, ""), "reset");
    assert_eq!(user.rpc(&mut h, "OK ATR toolbox-dnd"), "");
    let service = Client::open(&mut h, proto::TCLO).unwrap();
    assert_eq!(service.rpc(&mut h, ""), "reset");
    h.queue_tclo_for_service(TcloCommand::OsHalt).unwrap();
    // The user session's loop polls first and is not handed OS_Halt.
    assert_eq!(user.rpc(&mut h, ""), "");
    assert_eq!(service.rpc(&mut h, "OK ATR toolbox"), "OS_Halt");
    assert_eq!(h.pending_tclo(), 0);
    // powerOps answers at once ("OK " and no result), then reports over
    // RPCI when the power-off script is done.
    assert_eq!(service.rpc(&mut h, "OK "), "");
    let rpci = Client::open(&mut h, proto::RPCI).unwrap();
    assert_eq!(rpci.rpc(&mut h, "tools.os.statechange.status 1 1\0"), "1 ");
    let events = h.drain_events();
    assert!(
        events.contains(&Event::TcloReply {
            command: "OS_Halt".into(),
            reply: "OK ".into()
        }),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&Event::StateChangeStatus {
            success: true,
            state: 1
        })
    );
}

#[test]
fn counters_start_at_zero_and_count_calls_with_the_magic_only() {
    let mut h = host();
    assert_eq!(h.counters(), Counters::default());
    call(&mut h, cmd::GETVERSION, 0, 0, 3);
    let mut no_magic = Regs::backdoor_call(cmd::GETVERSION, 0, 0);
    no_magic.eax = 0;
    assert!(h.port_in(&mut no_magic, 3));
    assert_eq!(h.counters().low_bandwidth_calls, 1);
}

#[test]
fn tools_version_and_log_lines_are_drained_as_events() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    client.rpc(&mut h, "tools.set.version 12345");
    client.rpc(&mut h, "log hello");
    assert_eq!(
        h.drain_events(),
        [Event::ToolsVersion(12345), Event::GuestLog("hello".into())]
    );
    assert!(h.drain_events().is_empty());
}

#[test]
fn new_send_drops_an_unfetched_reply() {
    let mut h = host();
    let client = Client::open(&mut h, proto::RPCI).unwrap();
    assert!(client.send_low_bandwidth(&mut h, b"info-get guestinfo.preset"));
    assert_eq!(
        client.rpc(&mut h, "info-get guestinfo.nothing"),
        NO_VALUE_FOUND
    );
}

#[test]
fn buffered_bytes_stay_bounded_with_every_channel_full() {
    let mut h = host();
    let limit = Limits::default();
    let clients: Vec<_> = (0..8)
        .map(|_| Client::open(&mut h, proto::RPCI).unwrap())
        .collect();
    for client in &clients {
        client.call(&mut h, msg_type::SENDSIZE, limit.max_message);
        for _ in 0..(limit.max_message / 4 + 10) {
            client.call(&mut h, msg_type::SENDPAYLOAD, 0x4141_4141);
        }
    }
    assert!(h.buffered_bytes() <= limit.max_buffered_bytes() + "preset".len() + 1);
}
