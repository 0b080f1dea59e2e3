//! RPCI: the guest's remote procedure calls to the host.
//!
//! Invariants: every request gets exactly one reply; a reply starts with
//! `1 ` on success and `0 ` on failure (VMware's convention); a reply is
//! never longer than the longest value the store can hold plus two bytes.

use super::Services;
use crate::events::Event;
use crate::guestinfo::{is_guestinfo_key, GuestInfoError};

/// VMware's reply when `info-get` finds nothing.
pub const NO_VALUE_FOUND: &str = "0 No value found";
/// VMware's reply to a request it does not know.
pub const UNKNOWN_COMMAND: &str = "0 Unknown command";
/// The reply when `info-set` lacks a key and a value.
pub const TWO_ARGUMENTS_EXPECTED: &str = "0 Two and exactly two arguments expected";

/// Answers one RPCI request.
pub(crate) fn answer(request: &[u8], services: &mut Services) -> Vec<u8> {
    let text = String::from_utf8_lossy(strip_trailing_nul(request));
    let (name, args) = split_first_word(&text);
    let reply = match name {
        "info-get" => info_get(args, services),
        "info-set" => info_set(args, services),
        "tools.set.version" => set_tools_version(args, services),
        "tools.set.versiontype" => set_tools_version_type(args, services),
        "log" => log_line(args, services),
        "vmx.capability.unified_loop" => success(""),
        "SetGuestInfo" => set_guest_info(args),
        "SetGuestDiskInfo" => success(""),
        "tools.os.statechange.status" => state_change_status(args, services),
        capability if capability.starts_with("tools.capability.") => {
            let clipped = services.events.clip(&text);
            services.events.push(Event::Capability(clipped));
            success("")
        }
        _ => UNKNOWN_COMMAND.to_owned(),
    };
    reply.into_bytes()
}

fn info_get(args: &str, services: &Services) -> String {
    let key = args.trim();
    match services.guestinfo.get(key) {
        Some(value) if is_guestinfo_key(key) => success(value),
        _ => NO_VALUE_FOUND.to_owned(),
    }
}

fn info_set(args: &str, services: &mut Services) -> String {
    let (key, value) = split_first_word(args.trim_start());
    if key.is_empty() {
        return TWO_ARGUMENTS_EXPECTED.to_owned();
    }
    if !is_guestinfo_key(key) {
        return "0 Invalid key".to_owned();
    }
    match services.guestinfo.set(key, value) {
        Ok(()) => {
            let clipped = services.events.clip(key);
            services.events.push(Event::GuestInfoSet(clipped));
            success("")
        }
        Err(GuestInfoError::TooManyKeys) => "0 Too many keys".to_owned(),
        Err(GuestInfoError::TooLarge) => "0 Value too large".to_owned(),
    }
}

/// `SetGuestInfo  TYPE DATA` (two spaces: the old empty key): vmtoolsd's
/// guestInfo plugin reports the uptime, OS names, build, NICs (XDR) and
/// disk space this way, and `SetGuestDiskInfo JSON` the disks. nestmon
/// keeps no guest properties: a report with a numeric type is accepted
/// and dropped, which is what stops the plugin from retrying with older
/// encodings and warning in its log.
fn set_guest_info(args: &str) -> String {
    let kind = args.trim_start().split(' ').next().unwrap_or("");
    match kind.parse::<u32>() {
        Ok(_) => success(""),
        Err(_) => "0 Invalid type".to_owned(),
    }
}

/// `tools.os.statechange.status SUCCESS STATE`, which Tools send when a
/// power operation's script finished (open-vm-tools' powerOps plugin,
/// before it shuts the guest down for `OS_Halt`): SUCCESS is 0 or 1,
/// STATE the operation (`GuestOsState`).
fn state_change_status(args: &str, services: &mut Services) -> String {
    let mut words = args.split_whitespace();
    let parsed = match (words.next(), words.next(), words.next()) {
        (Some(success), Some(state), None) => success
            .parse::<u32>()
            .ok()
            .filter(|&s| s <= 1)
            .zip(state.parse::<u32>().ok()),
        _ => None,
    };
    match parsed {
        Some((succeeded, state)) => {
            services.events.push(Event::StateChangeStatus {
                success: succeeded == 1,
                state,
            });
            success("")
        }
        None => "0 Invalid arguments".to_owned(),
    }
}

fn set_tools_version(args: &str, services: &mut Services) -> String {
    match args.trim().parse::<u32>() {
        Ok(version) => {
            services.events.push(Event::ToolsVersion(version));
            success("")
        }
        Err(_) => "0 Invalid version".to_owned(),
    }
}

fn set_tools_version_type(args: &str, services: &mut Services) -> String {
    let clipped = services.events.clip(args.trim());
    services.events.push(Event::ToolsVersionType(clipped));
    success("")
}

fn log_line(args: &str, services: &mut Services) -> String {
    let clipped = services.events.clip(args);
    services.events.push(Event::GuestLog(clipped));
    success("")
}

fn success(value: &str) -> String {
    format!("1 {value}")
}

/// The request name and the rest after one separating space.
fn split_first_word(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((first, rest)) => (first, rest),
        None => (text, ""),
    }
}

fn strip_trailing_nul(request: &[u8]) -> &[u8] {
    request.strip_suffix(&[0]).unwrap_or(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn services() -> Services {
        Services::new([("guestinfo.preset", "p")], &Limits::default())
    }

    fn ask(services: &mut Services, request: &str) -> String {
        String::from_utf8(answer(request.as_bytes(), services)).unwrap()
    }

    #[test]
    fn state_change_status_is_accepted_and_reported_as_an_event() {
        let mut services = services();
        // open-vm-tools sends the string with its NUL.
        let reply = answer(b"tools.os.statechange.status 1 1\0", &mut services);
        assert_eq!(reply, b"1 ");
        assert_eq!(
            services.events.drain(),
            vec![Event::StateChangeStatus {
                success: true,
                state: 1
            }]
        );
        assert_eq!(ask(&mut services, "tools.os.statechange.status 0 2"), "1 ");
        assert_eq!(
            services.events.drain(),
            vec![Event::StateChangeStatus {
                success: false,
                state: 2
            }]
        );
    }

    #[test]
    fn malformed_state_change_status_is_refused_without_an_event() {
        let mut services = services();
        for bad in ["", "1", "2 1", "1 x", "1 1 1", "yes 1"] {
            let request = format!("tools.os.statechange.status {bad}");
            assert_eq!(
                ask(&mut services, &request),
                "0 Invalid arguments",
                "{bad:?}"
            );
        }
        assert!(services.events.drain().is_empty());
    }

    #[test]
    fn info_get_of_a_preset_value_replies_one_space_value() {
        assert_eq!(ask(&mut services(), "info-get guestinfo.preset"), "1 p");
    }

    #[test]
    fn info_get_of_a_missing_key_replies_no_value_found() {
        assert_eq!(
            ask(&mut services(), "info-get guestinfo.missing"),
            NO_VALUE_FOUND
        );
        assert_eq!(ask(&mut services(), "info-get"), NO_VALUE_FOUND);
    }

    #[test]
    fn info_set_then_get_returns_the_value_with_its_spaces() {
        let mut s = services();
        assert_eq!(ask(&mut s, "info-set guestinfo.k hello world"), "1 ");
        assert_eq!(ask(&mut s, "info-get guestinfo.k"), "1 hello world");
        assert_eq!(
            s.events.drain(),
            [Event::GuestInfoSet("guestinfo.k".into())]
        );
    }

    #[test]
    fn info_set_without_a_key_replies_two_arguments_expected() {
        assert_eq!(ask(&mut services(), "info-set"), TWO_ARGUMENTS_EXPECTED);
    }

    #[test]
    fn info_set_outside_guestinfo_is_refused() {
        assert_eq!(
            ask(&mut services(), "info-set machine.id x"),
            "0 Invalid key"
        );
    }

    #[test]
    fn info_set_past_the_key_limit_fails_with_zero() {
        let limits = Limits {
            max_guestinfo_keys: 1,
            ..Limits::default()
        };
        let mut s = Services::new(Vec::<(&str, &str)>::new(), &limits);
        assert_eq!(ask(&mut s, "info-set guestinfo.a 1"), "1 ");
        assert_eq!(ask(&mut s, "info-set guestinfo.b 1"), "0 Too many keys");
    }

    #[test]
    fn tools_set_version_records_the_version() {
        let mut s = services();
        assert_eq!(ask(&mut s, "tools.set.version 12345"), "1 ");
        assert_eq!(s.events.drain(), [Event::ToolsVersion(12345)]);
        assert_eq!(ask(&mut s, "tools.set.version abc"), "0 Invalid version");
    }

    #[test]
    fn versiontype_log_and_capabilities_are_recorded() {
        let mut s = services();
        assert_eq!(ask(&mut s, "tools.set.versiontype 1"), "1 ");
        assert_eq!(ask(&mut s, "log hello from the guest"), "1 ");
        assert_eq!(ask(&mut s, "tools.capability.hgfs_server toolbox 1"), "1 ");
        assert_eq!(
            s.events.drain(),
            [
                Event::ToolsVersionType("1".into()),
                Event::GuestLog("hello from the guest".into()),
                Event::Capability("tools.capability.hgfs_server toolbox 1".into()),
            ]
        );
    }

    #[test]
    fn unified_loop_capability_is_acknowledged() {
        assert_eq!(
            ask(&mut services(), "vmx.capability.unified_loop toolbox"),
            "1 "
        );
    }

    #[test]
    fn guest_info_reports_of_the_guestinfo_plugin_are_accepted() {
        let mut s = services();
        assert_eq!(ask(&mut s, "SetGuestInfo  7 930"), "1 ");
        assert_eq!(
            answer(b"SetGuestInfo  9 \0\0\0\x03\0\0\0\x01", &mut s),
            b"1 "
        );
        assert_eq!(ask(&mut s, "SetGuestDiskInfo {\"version\":\"1\"}"), "1 ");
        assert_eq!(ask(&mut s, "SetGuestInfo  uptime 3"), "0 Invalid type");
        assert_eq!(ask(&mut s, "info-get guestinfo.7"), NO_VALUE_FOUND);
    }

    #[test]
    fn unknown_request_replies_unknown_command() {
        assert_eq!(ask(&mut services(), "frobnicate now"), UNKNOWN_COMMAND);
        assert_eq!(ask(&mut services(), ""), UNKNOWN_COMMAND);
    }

    #[test]
    fn trailing_nul_is_ignored_and_invalid_utf8_does_not_panic() {
        let mut s = services();
        assert_eq!(answer(b"info-get guestinfo.preset\0", &mut s), b"1 p");
        assert_eq!(
            answer(&[0xFF, 0xFE, b' ', 0x80], &mut s),
            UNKNOWN_COMMAND.as_bytes()
        );
    }
}
