//! GuestRPC (backdoor command MESSAGE, 30): the message layer Tools use on
//! top of the backdoor, as open-vm-tools' `lib/message/message.c` speaks it.
//!
//! Register conventions (low-bandwidth, port 0x5658):
//! * in: ECX = `30 | type << 16`, EDX high = channel id, ESI/EDI = cookies,
//!   EBX = argument (protocol and flags, size, 4 payload bytes, status);
//! * out: ECX high = status bits, EDX high = channel id (OPEN) or the
//!   message type the host is sending (RECVSIZE, RECVPAYLOAD), EBX = size
//!   or 4 payload bytes, ESI/EDI = cookies (OPEN).
//!
//! High-bandwidth (port 0x5659, `rep outsb` sends, `rep insb` receives):
//! EBX = `0 | SUCCESS << 16`, EDX high = channel id, ECX = byte count; the
//! cookies are EBP/EDI for a send (ESI = source) and ESI/EBP for a receive
//! (EDI = destination); EBX high carries the status back.
//!
//! Invariants: at most `Limits::max_channels` channels are open; a message
//! is at most `Limits::max_message` bytes; every failure is a status without
//! SUCCESS, never a panic.

mod channel;
pub(crate) mod rpci;
pub mod tclo;

use crate::abi::{msg_type, proto, status};
use crate::counters::Counters;
use crate::events::EventLog;
use crate::guestinfo::GuestInfo;
use crate::limits::Limits;
use crate::memory::GuestMemory;
use crate::regs::{high_half, join_halves, low_half, with_high_half, Regs};
use channel::{Channel, Cookies, Protocol};
use tclo::TcloQueue;

/// The host services GuestRPC requests reach.
#[derive(Clone, Debug)]
pub(crate) struct Services {
    pub(crate) guestinfo: GuestInfo,
    pub(crate) events: EventLog,
    pub(crate) tclo: TcloQueue,
    /// Traffic counts (the host side counts calls; channels count
    /// messages).
    pub(crate) counters: Counters,
    /// Commands put ahead of the queue whenever a TCLO channel opens.
    pub(crate) tclo_greeting: Vec<tclo::TcloCommand>,
}

impl Services {
    pub(crate) fn new<I, K, V>(guestinfo: I, limits: &Limits) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        Services {
            guestinfo: GuestInfo::new(
                guestinfo,
                limits.max_guestinfo_keys,
                limits.max_guestinfo_bytes,
            ),
            events: EventLog::new(limits.max_events, limits.max_event_text),
            tclo: TcloQueue::new(limits.max_tclo_queue, limits.max_message as usize),
            counters: Counters::default(),
            tclo_greeting: Vec::new(),
        }
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.guestinfo.bytes() + self.events.buffered_bytes() + self.tclo.buffered_bytes()
    }
}

/// The channel table and cookie generator.
#[derive(Clone, Debug)]
pub(crate) struct Rpc {
    channels: Vec<Option<Channel>>,
    max_message: usize,
    high_bandwidth: bool,
    cookie_state: u64,
}

/// Where a call carries its cookies.
#[derive(Clone, Copy)]
struct Caller {
    channel: u16,
    cookie_high: u32,
    cookie_low: u32,
}

impl Rpc {
    pub(crate) fn new(limits: &Limits, high_bandwidth: bool, cookie_seed: u64) -> Self {
        Rpc {
            channels: vec![None; limits.max_channels],
            max_message: limits.max_message as usize,
            high_bandwidth,
            cookie_state: cookie_seed | 1,
        }
    }

    /// A low-bandwidth MESSAGE call.
    pub(crate) fn message(&mut self, regs: &mut Regs, services: &mut Services) {
        let kind = regs.subcommand();
        let caller = Caller {
            channel: regs.channel(),
            cookie_high: regs.esi,
            cookie_low: regs.edi,
        };
        let (max_message, high_bandwidth) = (self.max_message, self.high_bandwidth);
        let status = match kind {
            msg_type::OPEN => self.open(regs, services),
            msg_type::CLOSE => self.close(caller),
            _ => match self.channel_mut(caller) {
                Some(channel) => step(channel, kind, regs, services, max_message, high_bandwidth),
                None => 0,
            },
        };
        regs.ecx = with_high_half(regs.ecx, status);
    }

    /// `rep outsb` on the high-bandwidth port: the guest's message payload.
    /// Returns the bytes moved.
    pub(crate) fn hb_send(
        &mut self,
        regs: &mut Regs,
        mem: &mut dyn GuestMemory,
        services: &mut Services,
    ) -> u32 {
        let caller = Caller {
            channel: regs.channel(),
            cookie_high: regs.ebp,
            cookie_low: regs.edi,
        };
        let count = regs.ecx;
        let moved = self
            .channel_mut(caller)
            .and_then(|channel| hb_send_payload(channel, regs.esi, count, mem, services));
        finish_hb(regs, moved, |r, n| r.esi = r.esi.wrapping_add(n))
    }

    /// `rep insb` on the high-bandwidth port: the host's reply payload.
    /// Returns the bytes moved.
    pub(crate) fn hb_receive(&mut self, regs: &mut Regs, mem: &mut dyn GuestMemory) -> u32 {
        let caller = Caller {
            channel: regs.channel(),
            cookie_high: regs.esi,
            cookie_low: regs.ebp,
        };
        let count = regs.ecx;
        let moved = self
            .channel_mut(caller)
            .and_then(|channel| hb_receive_payload(channel, regs.edi, count, mem));
        finish_hb(regs, moved, |r, n| r.edi = r.edi.wrapping_add(n))
    }

    /// Whether an open TCLO channel is polled by Tools application `app`
    /// (it answered `reset` with `OK ATR <app>`).
    pub(crate) fn tclo_app_polling(&self, app: &str) -> bool {
        self.channels
            .iter()
            .flatten()
            .any(|channel| channel.tclo_app() == Some(app))
    }

    /// Channels currently open.
    pub(crate) fn open_channels(&self) -> usize {
        self.channels.iter().flatten().count()
    }

    /// Bytes held by all channels.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.channels
            .iter()
            .flatten()
            .map(Channel::buffered_bytes)
            .sum()
    }

    fn open(&mut self, regs: &mut Regs, services: &mut Services) -> u16 {
        let flags = regs.ebx & proto::FLAG_COOKIE;
        let protocol = match regs.ebx & !proto::FLAG_COOKIE {
            proto::RPCI => Protocol::Rpci,
            proto::TCLO => Protocol::Tclo,
            _ => return 0,
        };
        let Some(id) = self.channels.iter().position(Option::is_none) else {
            return 0;
        };
        let cookies = (flags != 0).then(|| self.next_cookies());
        self.channels[id] = Some(Channel::new(protocol, cookies));
        regs.edx = join_halves(low_half(regs.edx), id as u16);
        if let Some(cookies) = cookies {
            regs.esi = cookies.high;
            regs.edi = cookies.low;
        }
        if protocol == Protocol::Tclo {
            services.counters.tclo_channels_opened += 1;
            // Last first: each goes to the front. A full queue keeps what
            // it has (the greeting is a courtesy, the queue a bound).
            for command in services.tclo_greeting.iter().rev() {
                let _ = services.tclo.push_front(command.as_str());
            }
        }
        status::SUCCESS
    }

    fn close(&mut self, caller: Caller) -> u16 {
        if self.channel_mut(caller).is_none() {
            return 0;
        }
        self.channels[usize::from(caller.channel)] = None;
        status::SUCCESS
    }

    fn channel_mut(&mut self, caller: Caller) -> Option<&mut Channel> {
        let channel = self
            .channels
            .get_mut(usize::from(caller.channel))?
            .as_mut()?;
        channel
            .cookies_match(caller.cookie_high, caller.cookie_low)
            .then_some(channel)
    }

    /// xorshift64*: cookies the guest cannot predict from the channel id.
    fn next_cookies(&mut self) -> Cookies {
        let mut x = self.cookie_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.cookie_state = x;
        let value = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Cookies {
            high: (value >> 32) as u32,
            low: value as u32,
        }
    }
}

/// One low-bandwidth MESSAGE step on an open channel; returns the status.
fn step(
    channel: &mut Channel,
    kind: u16,
    regs: &mut Regs,
    services: &mut Services,
    max_message: usize,
    high_bandwidth: bool,
) -> u16 {
    let hb = if high_bandwidth { status::HB } else { 0 };
    match kind {
        msg_type::SENDSIZE => {
            let size = regs.ebx as usize;
            if size > max_message {
                return 0;
            }
            channel.begin_send(size, services);
            status::SUCCESS | hb
        }
        msg_type::SENDPAYLOAD => {
            let remaining = channel.send_remaining().unwrap_or(0);
            if remaining == 0 {
                return 0;
            }
            let word = regs.ebx.to_le_bytes();
            channel.append(&word[..remaining.min(4)], services);
            status::SUCCESS
        }
        msg_type::RECVSIZE => match channel.reply_size() {
            Some(size) => {
                regs.ebx = size as u32;
                regs.edx = join_halves(low_half(regs.edx), msg_type::SENDSIZE);
                status::SUCCESS | status::DORECV | hb
            }
            None => {
                regs.ebx = 0;
                status::SUCCESS
            }
        },
        msg_type::RECVPAYLOAD => match channel.next_reply_word() {
            Some(word) => {
                regs.ebx = word;
                regs.edx = join_halves(low_half(regs.edx), msg_type::SENDPAYLOAD);
                status::SUCCESS
            }
            None => 0,
        },
        msg_type::RECVSTATUS if channel.finish_reply() => status::SUCCESS,
        _ => 0,
    }
}

fn hb_send_payload(
    channel: &mut Channel,
    source: u32,
    count: u32,
    mem: &mut dyn GuestMemory,
    services: &mut Services,
) -> Option<u32> {
    let remaining = channel.send_remaining()?;
    if count as usize != remaining || count == 0 {
        return None;
    }
    let mut payload = vec![0u8; remaining];
    if mem.read(source, &mut payload).is_err() {
        channel.abort_send();
        return None;
    }
    channel.append(&payload, services);
    Some(count)
}

fn hb_receive_payload(
    channel: &mut Channel,
    destination: u32,
    count: u32,
    mem: &mut dyn GuestMemory,
) -> Option<u32> {
    let rest = channel.reply_remaining()?;
    if count as usize != rest.len() || count == 0 {
        return None;
    }
    mem.write(destination, rest).ok()?;
    channel.mark_reply_fetched();
    Some(count)
}

/// Writes the high-bandwidth status into EBX's high half; on success the
/// string instruction completes (ECX = 0, the address register advanced).
fn finish_hb(regs: &mut Regs, moved: Option<u32>, advance: impl Fn(&mut Regs, u32)) -> u32 {
    match moved {
        Some(bytes) => {
            regs.ebx = with_high_half(regs.ebx, status::SUCCESS);
            regs.ecx = 0;
            advance(regs, bytes);
            bytes
        }
        None => {
            regs.ebx = with_high_half(regs.ebx, 0);
            0
        }
    }
}

/// The status bits of a MESSAGE reply in ECX.
pub fn message_status(regs: &Regs) -> u16 {
    high_half(regs.ecx)
}
