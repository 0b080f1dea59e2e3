//! One GuestRPC channel: the guest's message being received, the host's
//! reply being fetched.
//!
//! Invariants: the incoming buffer never exceeds the size announced by
//! SENDSIZE (itself bounded by the message limit); the outgoing buffer is
//! a complete reply; `fetched` never exceeds the outgoing length; a TCLO
//! channel's `app` is the application its last answer to `reset` named
//! (`OK ATR <app>`), at most one message long.

use super::Services;
use crate::events::Event;

/// The protocol a channel was opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Guest calls the host.
    Rpci,
    /// Host commands the guest.
    Tclo,
}

/// The cookies handed out at OPEN (ESI and EDI of the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cookies {
    pub(crate) high: u32,
    pub(crate) low: u32,
}

#[derive(Clone, Debug)]
struct Incoming {
    expected: usize,
    data: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Outgoing {
    data: Vec<u8>,
    fetched: usize,
}

/// One open channel.
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    protocol: Protocol,
    cookies: Option<Cookies>,
    incoming: Option<Incoming>,
    outgoing: Option<Outgoing>,
    tclo_in_flight: Option<String>,
    /// The Tools application polling this TCLO channel, from its answer
    /// to `reset`.
    app: Option<String>,
}

impl Channel {
    pub(crate) fn new(protocol: Protocol, cookies: Option<Cookies>) -> Self {
        Channel {
            protocol,
            cookies,
            incoming: None,
            outgoing: None,
            tclo_in_flight: None,
            app: None,
        }
    }

    /// True when the caller's cookies match (channels opened without the
    /// cookie flag accept any).
    pub(crate) fn cookies_match(&self, high: u32, low: u32) -> bool {
        match self.cookies {
            Some(cookies) => cookies.high == high && cookies.low == low,
            None => true,
        }
    }

    /// SENDSIZE: start receiving a message of `size` bytes; an unfetched
    /// reply is dropped. A zero-size message completes at once.
    pub(crate) fn begin_send(&mut self, size: usize, services: &mut Services) {
        self.outgoing = None;
        self.incoming = Some(Incoming {
            expected: size,
            data: Vec::with_capacity(size),
        });
        self.complete_if_whole(services);
    }

    /// Bytes still expected from the guest, if a send is under way.
    pub(crate) fn send_remaining(&self) -> Option<usize> {
        self.incoming
            .as_ref()
            .map(|incoming| incoming.expected - incoming.data.len())
    }

    /// SENDPAYLOAD / high-bandwidth send: append up to the remaining bytes
    /// of `piece`; false when no send is under way.
    pub(crate) fn append(&mut self, piece: &[u8], services: &mut Services) -> bool {
        let Some(incoming) = self.incoming.as_mut() else {
            return false;
        };
        let remaining = incoming.expected - incoming.data.len();
        incoming
            .data
            .extend_from_slice(&piece[..piece.len().min(remaining)]);
        self.complete_if_whole(services);
        true
    }

    /// Abandons a send under way (after a fault).
    pub(crate) fn abort_send(&mut self) {
        self.incoming = None;
    }

    fn complete_if_whole(&mut self, services: &mut Services) {
        let whole = self
            .incoming
            .as_ref()
            .is_some_and(|incoming| incoming.data.len() == incoming.expected);
        if !whole {
            return;
        }
        if let Some(incoming) = self.incoming.take() {
            self.answer(&incoming.data, services);
        }
    }

    fn answer(&mut self, message: &[u8], services: &mut Services) {
        let reply = match self.protocol {
            Protocol::Rpci => {
                services.counters.rpci_requests += 1;
                Some(super::rpci::answer(message, services))
            }
            Protocol::Tclo => {
                services.counters.tclo_polls += 1;
                let command = self.next_tclo_command(message, services);
                services.counters.tclo_commands_sent += u64::from(command.is_some());
                command
            }
        };
        self.outgoing = reply.map(|data| Outgoing { data, fetched: 0 });
    }

    /// A TCLO message is the guest's reply to the command in flight (empty
    /// on the first poll); the next queued command, if any, is the answer.
    fn next_tclo_command(&mut self, message: &[u8], services: &mut Services) -> Option<Vec<u8>> {
        if let Some(command) = self.tclo_in_flight.take() {
            let reply = String::from_utf8_lossy(message);
            if command == super::tclo::TcloCommand::Reset.as_str() {
                self.app = super::tclo::app_of_reset_reply(&reply).map(str::to_owned);
            }
            let reply = services.events.clip(&reply);
            let command = services.events.clip(&command);
            services.events.push(Event::TcloReply { command, reply });
        }
        let command = services.tclo.pop_for(self.app.as_deref())?;
        let bytes = command.clone().into_bytes();
        self.tclo_in_flight = Some(command);
        Some(bytes)
    }

    /// The Tools application polling this channel, once it answered
    /// `reset` (TCLO channels only).
    pub(crate) fn tclo_app(&self) -> Option<&str> {
        match self.protocol {
            Protocol::Tclo => self.app.as_deref(),
            Protocol::Rpci => None,
        }
    }

    /// RECVSIZE: the size of the pending reply, restarting its fetch.
    pub(crate) fn reply_size(&mut self) -> Option<usize> {
        let outgoing = self.outgoing.as_mut()?;
        outgoing.fetched = 0;
        Some(outgoing.data.len())
    }

    /// Bytes of the reply not yet fetched.
    pub(crate) fn reply_remaining(&self) -> Option<&[u8]> {
        self.outgoing
            .as_ref()
            .map(|outgoing| &outgoing.data[outgoing.fetched..])
    }

    /// RECVPAYLOAD: the next four bytes (zero-padded), or `None` when no
    /// reply bytes are left.
    pub(crate) fn next_reply_word(&mut self) -> Option<u32> {
        let outgoing = self.outgoing.as_mut()?;
        let rest = &outgoing.data[outgoing.fetched..];
        if rest.is_empty() {
            return None;
        }
        let take = rest.len().min(4);
        let mut word = [0u8; 4];
        word[..take].copy_from_slice(&rest[..take]);
        outgoing.fetched += take;
        Some(u32::from_le_bytes(word))
    }

    /// Marks the whole reply as fetched (high-bandwidth receive).
    pub(crate) fn mark_reply_fetched(&mut self) {
        if let Some(outgoing) = self.outgoing.as_mut() {
            outgoing.fetched = outgoing.data.len();
        }
    }

    /// RECVSTATUS: the guest is done with the reply; false if none pending.
    pub(crate) fn finish_reply(&mut self) -> bool {
        self.outgoing.take().is_some()
    }

    /// Bytes this channel holds.
    pub(crate) fn buffered_bytes(&self) -> usize {
        let incoming = self.incoming.as_ref().map_or(0, |i| i.data.capacity());
        let outgoing = self.outgoing.as_ref().map_or(0, |o| o.data.capacity());
        let in_flight = self.tclo_in_flight.as_ref().map_or(0, String::capacity);
        let app = self.app.as_ref().map_or(0, String::capacity);
        incoming + outgoing + in_flight + app
    }
}
