//! TCLO: commands the host queues for the guest's Tools to poll.
//!
//! Invariant: at most `max_queue` commands of at most `max_message` bytes
//! wait in the queue; the host side refuses more with a typed error.

use std::collections::VecDeque;

/// Commands VMware sends Tools over TCLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcloCommand {
    /// `reset`: the channel (re)starts; Tools answer `OK ATR toolbox`.
    Reset,
    /// `ping`: liveness check.
    Ping,
    /// `Capabilities_Register`: Tools announce their capabilities.
    CapabilitiesRegister,
    /// `OS_Halt`: shut the guest down.
    OsHalt,
    /// `OS_Reboot`: reboot the guest.
    OsReboot,
}

impl TcloCommand {
    /// The command text on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TcloCommand::Reset => "reset",
            TcloCommand::Ping => "ping",
            TcloCommand::CapabilitiesRegister => "Capabilities_Register",
            TcloCommand::OsHalt => "OS_Halt",
            TcloCommand::OsReboot => "OS_Reboot",
        }
    }
}

/// Why a TCLO command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcloQueueError {
    /// The queue already holds its maximum number of commands.
    #[error("the TCLO queue is full")]
    Full,
    /// The command is longer than a GuestRPC message may be.
    #[error("the TCLO command is longer than a message may be")]
    TooLong,
}

/// The host's queue of TCLO commands.
#[derive(Clone, Debug)]
pub(crate) struct TcloQueue {
    commands: VecDeque<String>,
    max_queue: usize,
    max_message: usize,
}

impl TcloQueue {
    pub(crate) fn new(max_queue: usize, max_message: usize) -> Self {
        TcloQueue {
            commands: VecDeque::new(),
            max_queue,
            max_message,
        }
    }

    pub(crate) fn push(&mut self, command: &str) -> Result<(), TcloQueueError> {
        if command.len() > self.max_message {
            return Err(TcloQueueError::TooLong);
        }
        if self.commands.len() >= self.max_queue {
            return Err(TcloQueueError::Full);
        }
        self.commands.push_back(command.to_owned());
        Ok(())
    }

    /// Like [`TcloQueue::push`], but ahead of everything queued.
    pub(crate) fn push_front(&mut self, command: &str) -> Result<(), TcloQueueError> {
        if command.len() > self.max_message {
            return Err(TcloQueueError::TooLong);
        }
        if self.commands.len() >= self.max_queue {
            return Err(TcloQueueError::Full);
        }
        self.commands.push_front(command.to_owned());
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> Option<String> {
        self.commands.pop_front()
    }

    pub(crate) fn len(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.commands.iter().map(String::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_first_in_first_out() {
        let mut queue = TcloQueue::new(4, 64);
        queue.push("reset").unwrap();
        queue.push("ping").unwrap();
        assert_eq!(queue.pop().as_deref(), Some("reset"));
        assert_eq!(queue.pop().as_deref(), Some("ping"));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn queue_refuses_past_its_limits() {
        let mut queue = TcloQueue::new(1, 4);
        assert_eq!(queue.push("reset"), Err(TcloQueueError::TooLong));
        queue.push("ping").unwrap();
        assert_eq!(queue.push("ping"), Err(TcloQueueError::Full));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.buffered_bytes(), 4);
    }

    #[test]
    fn command_names_match_the_wire_text() {
        assert_eq!(
            TcloCommand::CapabilitiesRegister.as_str(),
            "Capabilities_Register"
        );
        assert_eq!(TcloCommand::OsHalt.as_str(), "OS_Halt");
        assert_eq!(TcloCommand::OsReboot.as_str(), "OS_Reboot");
        assert_eq!(TcloCommand::Reset.as_str(), "reset");
        assert_eq!(TcloCommand::Ping.as_str(), "ping");
    }
}
