//! Things the guest did that the monitor should log, kept until drained.
//!
//! Invariant: at most `Limits::max_events` events of at most
//! `Limits::max_event_text` bytes of text each are held; when full, the
//! oldest event is dropped and counted.

use std::collections::VecDeque;

/// One thing worth logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `tools.set.version N`.
    ToolsVersion(u32),
    /// `tools.set.versiontype T`.
    ToolsVersionType(String),
    /// `log TEXT`.
    GuestLog(String),
    /// A `tools.capability.*` announcement (the whole request).
    Capability(String),
    /// `info-set` stored a guestinfo key.
    GuestInfoSet(String),
    /// The guest asked to stop timer catch-up (STOPCATCHUP).
    StopCatchup,
    /// The guest answered a host TCLO command.
    TcloReply {
        /// The command the host queued.
        command: String,
        /// The guest's reply.
        reply: String,
    },
    /// NESTING_CONTROL restricted (`true`) or opened (`false`) the backdoor.
    NestingRestricted(bool),
    /// `tools.os.statechange.status SUCCESS STATE`: Tools finished the
    /// power operation a TCLO command (`OS_Halt`, `OS_Reboot`, ...) asked
    /// for (its script ran, or failed); on success they now shut the
    /// guest down or reboot it.
    StateChangeStatus {
        /// Whether the operation's script succeeded.
        success: bool,
        /// open-vm-tools' `GuestOsState`: 1 halt, 2 reboot, 3 power-on,
        /// 4 resume, 5 suspend.
        state: u32,
    },
}

impl Event {
    fn text_len(&self) -> usize {
        match self {
            Event::ToolsVersionType(s)
            | Event::GuestLog(s)
            | Event::Capability(s)
            | Event::GuestInfoSet(s) => s.len(),
            Event::TcloReply { command, reply } => command.len() + reply.len(),
            Event::ToolsVersion(_)
            | Event::StopCatchup
            | Event::NestingRestricted(_)
            | Event::StateChangeStatus { .. } => 0,
        }
    }
}

/// A bounded queue of events.
#[derive(Clone, Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    capacity: usize,
    max_text: usize,
    dropped: u64,
}

impl EventLog {
    /// An empty log holding up to `capacity` events of `max_text` bytes.
    pub fn new(capacity: usize, max_text: usize) -> Self {
        EventLog {
            events: VecDeque::new(),
            capacity,
            max_text,
            dropped: 0,
        }
    }

    /// Text cut to the per-event limit (at a character boundary).
    pub fn clip(&self, text: &str) -> String {
        clip_text(text, self.max_text)
    }

    /// Appends `event`, dropping the oldest one when full.
    pub fn push(&mut self, event: Event) {
        if self.capacity == 0 {
            self.dropped += 1;
            return;
        }
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Takes every event, oldest first.
    pub fn drain(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// How many events were dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes of text held.
    pub fn buffered_bytes(&self) -> usize {
        self.events.iter().map(Event::text_len).sum()
    }
}

/// `text` cut to at most `max` bytes without splitting a character.
pub fn clip_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_log_drops_the_oldest_event_and_counts_it() {
        let mut log = EventLog::new(2, 16);
        log.push(Event::ToolsVersion(1));
        log.push(Event::ToolsVersion(2));
        log.push(Event::ToolsVersion(3));
        assert_eq!(log.dropped(), 1);
        assert_eq!(
            log.drain(),
            [Event::ToolsVersion(2), Event::ToolsVersion(3)]
        );
        assert!(log.drain().is_empty());
    }

    #[test]
    fn clip_never_splits_a_character() {
        assert_eq!(clip_text("héllo", 2), "h");
        assert_eq!(clip_text("héllo", 3), "hé");
        assert_eq!(clip_text("abc", 10), "abc");
    }

    #[test]
    fn buffered_bytes_counts_event_text() {
        let mut log = EventLog::new(4, 16);
        log.push(Event::GuestLog("abcd".into()));
        log.push(Event::TcloReply {
            command: "ping".into(),
            reply: "OK ".into(),
        });
        assert_eq!(log.buffered_bytes(), 11);
    }
}
