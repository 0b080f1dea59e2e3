//! Property tests: arbitrary register sequences and channel interleavings
//! never panic and never grow the backdoor's memory past its limits.

use backdoor::abi::{self, cmd, msg_type, proto};
use backdoor::{join_halves, Backdoor, FlatMemory, HostFacts, Limits, Regs};
use proptest::prelude::*;

/// One guest access.
#[derive(Clone, Debug)]
enum Op {
    /// Raw registers through one of the four access kinds.
    Raw { kind: u8, regs: Regs, cpl: u8 },
    /// OPEN a channel with the cookie flag.
    Open { tclo: bool },
    /// A MESSAGE call on a channel opened earlier, with its real cookies.
    OnChannel { pick: usize, kind: u16, ebx: u32 },
    /// A high-bandwidth transfer on a channel opened earlier.
    HighBandwidth {
        pick: usize,
        send: bool,
        count: u32,
        address: u32,
    },
    /// The host queues a TCLO command.
    QueueTclo { text: String },
}

fn raw_regs() -> impl Strategy<Value = Regs> {
    let magic = prop_oneof![Just(abi::BDOOR_MAGIC), any::<u32>()];
    let command = prop_oneof![
        Just(cmd::MESSAGE),
        Just(cmd::NESTING_CONTROL),
        Just(cmd::GETVERSION),
        Just(cmd::GETTIME),
        any::<u16>()
    ];
    let port = prop_oneof![Just(abi::BDOOR_PORT), Just(abi::BDOORHB_PORT), any::<u16>()];
    let small = prop_oneof![0u32..80_000, any::<u32>()];
    (
        magic,
        command,
        0u16..9,
        port,
        0u16..10,
        small,
        any::<[u32; 3]>(),
    )
        .prop_map(
            |(eax, command, sub, port, channel, ebx, [esi, edi, ebp])| Regs {
                eax,
                ebx,
                ecx: join_halves(command, sub),
                edx: join_halves(port, channel),
                esi,
                edi,
                ebp,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, raw_regs(), 0u8..4).prop_map(|(kind, regs, cpl)| Op::Raw { kind, regs, cpl }),
        any::<bool>().prop_map(|tclo| Op::Open { tclo }),
        (
            any::<usize>(),
            0u16..8,
            prop_oneof![0u32..70_000, any::<u32>()]
        )
            .prop_map(|(pick, kind, ebx)| Op::OnChannel { pick, kind, ebx }),
        (any::<usize>(), any::<bool>(), 0u32..70_000, 0u32..5000).prop_map(
            |(pick, send, count, address)| Op::HighBandwidth {
                pick,
                send,
                count,
                address
            }
        ),
        "[a-z_ ]{0,40}".prop_map(|text| Op::QueueTclo { text }),
    ]
}

struct Harness {
    host: Backdoor,
    memory: FlatMemory,
    opened: Vec<(u16, u32, u32)>,
}

impl Harness {
    fn new(limits: Limits) -> Self {
        Harness {
            host: Backdoor::with_limits(
                HostFacts::default(),
                [("guestinfo.preset", "value")],
                limits,
            ),
            memory: FlatMemory::new(4096),
            opened: Vec::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Raw { kind, regs, cpl } => self.raw(*kind, *regs, *cpl),
            Op::Open { tclo } => self.open(*tclo),
            Op::OnChannel { pick, kind, ebx } => {
                if let Some(&(id, high, low)) = self.pick(*pick) {
                    let mut regs = Regs::backdoor_call(cmd::MESSAGE, *kind, *ebx);
                    regs.edx = join_halves(abi::BDOOR_PORT, id);
                    regs.esi = high;
                    regs.edi = low;
                    self.host.port_in(&mut regs, 3);
                }
            }
            Op::HighBandwidth {
                pick,
                send,
                count,
                address,
            } => {
                if let Some(&(id, high, low)) = self.pick(*pick) {
                    let restricted = self.host.restricted();
                    let moved_ok = |moved: Option<u32>| match moved {
                        None => restricted,
                        Some(n) => n == 0 || n == *count,
                    };
                    let mut regs = Regs {
                        eax: abi::BDOOR_MAGIC,
                        ebx: join_halves(abi::hb_cmd::MESSAGE, 1),
                        ecx: *count,
                        edx: join_halves(abi::BDOORHB_PORT, id),
                        ..Regs::default()
                    };
                    if *send {
                        (regs.ebp, regs.edi, regs.esi) = (high, low, *address);
                        let moved = self.host.hb_out(&mut regs, 3, &mut self.memory);
                        assert!(moved_ok(moved), "{moved:?}");
                    } else {
                        (regs.esi, regs.ebp, regs.edi) = (high, low, *address);
                        let moved = self.host.hb_in(&mut regs, 3, &mut self.memory);
                        assert!(moved_ok(moved), "{moved:?}");
                    }
                }
            }
            Op::QueueTclo { text } => {
                let _ = self.host.queue_tclo(text);
            }
        }
    }

    fn raw(&mut self, kind: u8, mut regs: Regs, cpl: u8) {
        match kind {
            0 => {
                self.host.port_in(&mut regs, cpl);
            }
            1 => {
                self.host.port_out(&mut regs, cpl);
            }
            2 => {
                self.host.hb_in(&mut regs, cpl, &mut self.memory);
            }
            _ => {
                self.host.hb_out(&mut regs, cpl, &mut self.memory);
            }
        }
    }

    fn open(&mut self, tclo: bool) {
        let protocol = if tclo { proto::TCLO } else { proto::RPCI };
        let mut regs =
            Regs::backdoor_call(cmd::MESSAGE, msg_type::OPEN, protocol | proto::FLAG_COOKIE);
        self.host.port_in(&mut regs, 3);
        if regs.subcommand() & abi::status::SUCCESS != 0 {
            self.opened.push((regs.channel(), regs.esi, regs.edi));
        }
    }

    fn pick(&self, pick: usize) -> Option<&(u16, u32, u32)> {
        (!self.opened.is_empty()).then(|| &self.opened[pick % self.opened.len()])
    }
}

fn check_sequence(limits: Limits, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(limits);
    let initial = harness.host.buffered_bytes();
    for op in ops {
        harness.apply(op);
        prop_assert!(harness.host.open_channels() <= limits.max_channels);
        prop_assert!(
            harness.host.buffered_bytes() <= limits.max_buffered_bytes() + initial,
            "buffered {} > bound {}",
            harness.host.buffered_bytes(),
            limits.max_buffered_bytes() + initial
        );
    }
    harness.host.drain_events();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_accesses_never_panic_and_stay_bounded(ops in prop::collection::vec(op(), 0..200)) {
        check_sequence(Limits::default(), &ops)?;
    }

    #[test]
    fn tight_limits_are_never_exceeded(ops in prop::collection::vec(op(), 0..300)) {
        let limits = Limits {
            max_channels: 2,
            max_message: 64,
            max_guestinfo_keys: 4,
            max_guestinfo_bytes: 128,
            max_events: 4,
            max_event_text: 16,
            max_tclo_queue: 2,
        };
        check_sequence(limits, &ops)?;
    }

    #[test]
    fn every_reply_register_file_is_deterministic(regs in raw_regs(), cpl in 0u8..4) {
        let mut first = Harness::new(Limits::default());
        let mut second = Harness::new(Limits::default());
        let (mut a, mut b) = (regs, regs);
        prop_assert_eq!(first.host.port_in(&mut a, cpl), second.host.port_in(&mut b, cpl));
        if regs.command() != cmd::GETTIME
            && regs.command() != cmd::GETTIMEFULL
            && regs.command() != cmd::GETTIMEFULL_WITH_LAG
        {
            prop_assert_eq!(a, b);
        }
    }
}
