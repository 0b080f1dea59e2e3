//! TCLO: commands the host queues for the guest's Tools to poll.
//!
//! Invariants: at most `max_queue` commands of at most `max_message` bytes
//! wait in the queue; the host side refuses more with a typed error. A
//! command queued for one Tools application (the name its TCLO channel
//! gave in its answer to `reset`, `OK ATR <app>`) is only handed to a
//! channel of that application; other commands go to whichever channel
//! polls first. Commands leave the queue in the order they came, per
//! channel.

use std::collections::VecDeque;

/// The application name of the Tools service's TCLO loop (vmtoolsd's
/// `vmsvc`), as it answers `reset`: `OK ATR toolbox`. The power
/// operations (`OS_Halt`, `OS_Reboot`) are its; the user session's loop
/// answers `OK ATR toolbox-dnd`.
pub const TOOLS_SERVICE_APP: &str = "toolbox";

/// The application a TCLO channel announced in its reply to `reset`
/// (`OK ATR toolbox` gives `toolbox`), if the reply is one.
pub fn app_of_reset_reply(reply: &str) -> Option<&str> {
    let app = reply.strip_prefix("OK ATR ")?.trim_end_matches('\0').trim();
    (!app.is_empty()).then_some(app)
}

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

/// One queued command and the application it is for (`None`: any).
#[derive(Clone, Debug)]
struct Queued {
    text: String,
    app: Option<String>,
}

/// The host's queue of TCLO commands.
#[derive(Clone, Debug)]
pub(crate) struct TcloQueue {
    commands: VecDeque<Queued>,
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
        let queued = self.checked(command, None)?;
        self.commands.push_back(queued);
        Ok(())
    }

    /// Like [`TcloQueue::push`], for the channels of application `app`
    /// only.
    pub(crate) fn push_for(&mut self, app: &str, command: &str) -> Result<(), TcloQueueError> {
        let queued = self.checked(command, Some(app))?;
        self.commands.push_back(queued);
        Ok(())
    }

    /// Like [`TcloQueue::push`], but ahead of everything queued.
    pub(crate) fn push_front(&mut self, command: &str) -> Result<(), TcloQueueError> {
        let queued = self.checked(command, None)?;
        self.commands.push_front(queued);
        Ok(())
    }

    fn checked(&self, command: &str, app: Option<&str>) -> Result<Queued, TcloQueueError> {
        if command.len() > self.max_message {
            return Err(TcloQueueError::TooLong);
        }
        if self.commands.len() >= self.max_queue {
            return Err(TcloQueueError::Full);
        }
        Ok(Queued {
            text: command.to_owned(),
            app: app.map(str::to_owned),
        })
    }

    /// The oldest command a channel of `app` (`None`: a channel that has
    /// not named its application yet) may take.
    pub(crate) fn pop_for(&mut self, app: Option<&str>) -> Option<String> {
        let at = self
            .commands
            .iter()
            .position(|queued| queued.app.is_none() || queued.app.as_deref() == app)?;
        self.commands.remove(at).map(|queued| queued.text)
    }

    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<String> {
        self.pop_for(None)
    }

    pub(crate) fn len(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.commands
            .iter()
            .map(|queued| queued.text.len() + queued.app.as_ref().map_or(0, String::len))
            .sum()
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
    fn a_command_for_an_application_waits_for_a_channel_of_that_application() {
        let mut queue = TcloQueue::new(4, 64);
        queue.push_for(TOOLS_SERVICE_APP, "OS_Halt").unwrap();
        queue.push("ping").unwrap();
        assert_eq!(queue.pop_for(Some("toolbox-dnd")).as_deref(), Some("ping"));
        assert_eq!(queue.pop_for(None), None, "an unnamed channel");
        assert_eq!(queue.pop_for(Some("toolbox-dnd")), None);
        assert_eq!(queue.pop_for(Some("toolbox")).as_deref(), Some("OS_Halt"));
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn targeted_commands_count_against_the_same_limits() {
        let mut queue = TcloQueue::new(1, 7);
        assert_eq!(
            queue.push_for("toolbox", "OS_Reboot"),
            Err(TcloQueueError::TooLong)
        );
        queue.push_for("toolbox", "OS_Halt").unwrap();
        assert_eq!(queue.push("ping"), Err(TcloQueueError::Full));
        assert_eq!(queue.buffered_bytes(), "OS_Halt".len() + "toolbox".len());
    }

    #[test]
    fn reset_replies_name_the_application() {
        assert_eq!(app_of_reset_reply("OK ATR toolbox"), Some("toolbox"));
        assert_eq!(
            app_of_reset_reply("OK ATR toolbox-dnd"),
            Some("toolbox-dnd")
        );
        assert_eq!(app_of_reset_reply("OK ATR toolbox\0"), Some("toolbox"));
        assert_eq!(app_of_reset_reply("OK ATR "), None);
        assert_eq!(app_of_reset_reply("ERROR Unknown command"), None);
        assert_eq!(app_of_reset_reply(""), None);
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
