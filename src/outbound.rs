//! Outbound calls: the rules a business's calls out must keep (calling hours in its time zone,
//! a rate, E.164 numbers), what Twilio's answering machine detection reports, and what the model
//! is told to say on a voicemail.
//!
//! Placing a call (the use case shared by `POST /api/v1/calls` and `voxrelay call place`) is
//! [`crate::ops::calls::place`]; this module holds its rules, free of I/O.
//!
//! Sources: <https://www.twilio.com/docs/voice/answering-machine-detection> (`MachineDetection`,
//! `AnsweredBy` values), <https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource>.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

/// A business's time zone when it sets none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// A business's calling hours when it sets none: 08:00 to 21:00 every day, in its time zone
/// (the window the US TCPA allows for telemarketing calls, a sane default elsewhere too).
pub const DEFAULT_CALLING_HOURS: &str = "08:00-21:00";

/// Outbound calls a business may place a minute when it sets no rate.
pub const DEFAULT_PER_MINUTE: i64 = 10;

/// The highest rate a business may set, calls a minute.
pub const MAX_PER_MINUTE: i64 = 600;

/// The most variables a call may be placed with.
pub const MAX_VARIABLES: usize = 16;

/// The longest variable value, characters.
pub const MAX_VARIABLE_LEN: usize = 200;

/// Checks an IANA time zone name (`America/New_York`, `Europe/Paris`, `UTC`) against the bundled
/// tz database.
///
/// Errors: a message naming the value.
pub fn validate_time_zone(name: &str) -> Result<String, String> {
    let name = name.trim();
    TimeZone::get(name).map(|_| name.to_string()).map_err(|_| {
        format!("time_zone {name:?} is not an IANA time zone (e.g. \"America/New_York\")")
    })
}

/// Checks the variables a call is placed with: at most [`MAX_VARIABLES`], names as
/// [`crate::prompt::template::is_call_variable`] allows, values of at most
/// [`MAX_VARIABLE_LEN`] characters without control characters.
///
/// Errors: a message naming the variable (never its value).
pub fn validate_variables(vars: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if vars.len() > MAX_VARIABLES {
        return Err(format!(
            "variables: {} given, at most {MAX_VARIABLES}",
            vars.len()
        ));
    }
    for (name, value) in vars {
        if !crate::prompt::template::is_call_variable(name) {
            return Err(format!(
                "variable {name:?}: names are lower case, a letter first, then letters, digits \
                 or '_', at most 32 (and not caller or direction)"
            ));
        }
        if value.chars().count() > MAX_VARIABLE_LEN || value.chars().any(char::is_control) {
            return Err(format!(
                "variable {name:?}: the value must be at most {MAX_VARIABLE_LEN} characters \
                 without control characters"
            ));
        }
    }
    Ok(())
}

/// One rule of [`CallingHours`]: on these weekdays, from `open` to `close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// Monday = 0 … Sunday = 6, inclusive; a range may wrap (`Sat-Mon`).
    days: (u8, u8),
    open: Time,
    close: Time,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// When a business may place calls, in its own time zone: comma-separated windows, each
/// `[DAYS ]HH:MM-HH:MM` where `DAYS` is a day (`Sat`) or a range (`Mon-Fri`; English
/// three-letter names) and leaving it out means every day. A call may be placed from the
/// opening minute up to (not including) the closing one. Example:
/// `Mon-Fri 09:00-18:00, Sat 10:00-13:00`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingHours {
    windows: Vec<Window>,
}

impl CallingHours {
    /// Parses calling hours.
    ///
    /// Errors: a message naming the part that is wrong and the expected form.
    pub fn parse(text: &str) -> Result<CallingHours, String> {
        let mut windows = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            windows.push(parse_window(part).ok_or_else(|| {
                format!(
                    "calling_hours {part:?} is not [DAYS ]HH:MM-HH:MM (e.g. \"Mon-Fri 09:00-18:00, \
                     Sat 10:00-13:00\" or \"08:00-21:00\")"
                )
            })?);
        }
        if windows.is_empty() {
            return Err(
                "calling_hours is empty: give at least one window such as \"08:00-21:00\"".into(),
            );
        }
        Ok(CallingHours { windows })
    }

    /// Whether `at` falls in a window, in time zone `zone`.
    pub fn is_open(&self, at: Timestamp, zone: &TimeZone) -> bool {
        let local = zone.to_datetime(at);
        let day = local.weekday().to_monday_zero_offset() as u8;
        let time = local.time();
        self.windows.iter().any(|w| {
            let in_days = if w.days.0 <= w.days.1 {
                (w.days.0..=w.days.1).contains(&day)
            } else {
                day >= w.days.0 || day <= w.days.1
            };
            in_days && time >= w.open && time < w.close
        })
    }
}

impl fmt::Display for CallingHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.windows.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match w.days {
                (0, 6) => {}
                (a, b) if a == b => write!(f, "{} ", DAYS[a as usize])?,
                (a, b) => write!(f, "{}-{} ", DAYS[a as usize], DAYS[b as usize])?,
            }
            write!(
                f,
                "{:02}:{:02}-{:02}:{:02}",
                w.open.hour(),
                w.open.minute(),
                w.close.hour(),
                w.close.minute()
            )?;
        }
        Ok(())
    }
}

fn parse_day(text: &str) -> Option<u8> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(text))
        .map(|i| i as u8)
}

fn parse_time(text: &str) -> Option<Time> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    if h == 24 && m == 0 {
        return Some(Time::MAX);
    }
    Time::new(h, m, 0, 0).ok()
}

fn parse_window(part: &str) -> Option<Window> {
    let (days, times) = match part.rsplit_once(' ') {
        Some((days, times)) => (Some(days.trim()), times.trim()),
        None => (None, part),
    };
    let days = match days {
        None => (0, 6),
        Some(days) => match days.split_once('-') {
            Some((a, b)) => (parse_day(a.trim())?, parse_day(b.trim())?),
            None => {
                let d = parse_day(days)?;
                (d, d)
            }
        },
    };
    let (open, close) = times.split_once('-')?;
    let (open, close) = (parse_time(open.trim())?, parse_time(close.trim())?);
    (open < close).then_some(Window { days, open, close })
}

/// The local time and weekday of `at` in `zone`, for a refusal's message (`Sat 22:14`).
pub fn local_time(at: Timestamp, zone: &TimeZone) -> String {
    let local = zone.to_datetime(at);
    let day = match local.weekday() {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    };
    format!("{day} {:02}:{:02}", local.hour(), local.minute())
}

/// What Twilio's answering machine detection said answered an outbound call (`AnsweredBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    /// A person (`human`), or AMD could not tell (`unknown`, or no `AnsweredBy`): the normal
    /// conversation.
    Person,
    /// An answering machine whose greeting has ended (`machine_end_beep`,
    /// `machine_end_silence`, `machine_end_other`; `machine_start` too): leave the voicemail.
    Machine,
    /// A fax machine: hang up.
    Fax,
}

impl Answerer {
    /// The answerer Twilio's `AnsweredBy` value names.
    pub fn from_answered_by(value: Option<&str>) -> Answerer {
        match value {
            Some(v) if v.starts_with("machine_") => Answerer::Machine,
            Some("fax") => Answerer::Fax,
            _ => Answerer::Person,
        }
    }
}

/// What the model is told to say when an answering machine took the call, as the one
/// response's instructions: the business's `voicemail` message (rendered, may be empty) or,
/// without one, a short message of its own naming `business_name`.
pub fn voicemail_instructions(business_name: &str, voicemail: &str) -> String {
    let what = if voicemail.trim().is_empty() {
        format!(
            "Say who is calling ({business_name}), why, in one sentence, and ask them to call \
             back."
        )
    } else {
        format!("Say this message, in substance and in its language: \"{voicemail}\"")
    };
    format!(
        "You have reached an answering machine, and its recording has started. Leave a voicemail \
         in one go, in under 20 seconds, without waiting for an answer: greet briefly, then {what} \
         End with a short goodbye. Do not ask questions."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn calling_hours_parse_print_and_judge_in_the_business_zone() {
        let hours = CallingHours::parse("mon-fri 09:00-18:00,Sat 10:00-13:00").expect("parses");
        assert_eq!(hours.to_string(), "Mon-Fri 09:00-18:00, Sat 10:00-13:00");
        let ny = TimeZone::get("America/New_York").expect("zone");
        // 2026-12-07 is a Monday; 14:00 UTC is 09:00 in New York (EST).
        assert!(hours.is_open(at("2026-12-07T14:00:00Z"), &ny));
        assert!(!hours.is_open(at("2026-12-07T13:59:00Z"), &ny));
        assert!(
            !hours.is_open(at("2026-12-07T23:00:00Z"), &ny),
            "18:00 closes"
        );
        // Saturday 12:00 in New York, then Sunday.
        assert!(hours.is_open(at("2026-12-12T17:00:00Z"), &ny));
        assert!(!hours.is_open(at("2026-12-13T17:00:00Z"), &ny));
        assert_eq!(local_time(at("2026-12-13T17:00:00Z"), &ny), "Sun 12:00");
        let every_day = CallingHours::parse(DEFAULT_CALLING_HOURS).expect("default");
        assert_eq!(every_day.to_string(), "08:00-21:00");
        assert!(every_day.is_open(at("2026-12-13T12:00:00Z"), &TimeZone::UTC));
        let wrap = CallingHours::parse("Sat-Mon 00:00-24:00").expect("wraps");
        assert!(wrap.is_open(at("2026-12-07T10:00:00Z"), &TimeZone::UTC));
        assert!(!wrap.is_open(at("2026-12-08T10:00:00Z"), &TimeZone::UTC));
    }

    #[test]
    fn bad_calling_hours_and_zones_are_named() {
        for bad in [
            "",
            "9-5",
            "Mon-Fri 18:00-09:00",
            "Funday 09:00-10:00",
            "25:00-26:00",
        ] {
            let err = CallingHours::parse(bad).expect_err(bad);
            assert!(err.contains("calling_hours"), "{err}");
        }
        assert!(validate_time_zone("Europe/Paris").is_ok());
        assert!(
            validate_time_zone("Mars/Olympus")
                .expect_err("unknown")
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn variables_are_checked_without_repeating_their_values() {
        let ok: std::collections::BTreeMap<String, String> =
            [("appointment_time".to_string(), "Tue 10:00".to_string())].into();
        assert!(validate_variables(&ok).is_ok());
        let bad_name: std::collections::BTreeMap<String, String> =
            [("Caller".to_string(), "x".to_string())].into();
        assert!(validate_variables(&bad_name).is_err());
        let secret = "4111111111111111\n";
        let bad_value: std::collections::BTreeMap<String, String> =
            [("card".to_string(), secret.to_string())].into();
        let err = validate_variables(&bad_value).expect_err("control character");
        assert!(!err.contains("4111"), "{err}");
    }

    #[test]
    fn answered_by_picks_the_conversation_or_the_voicemail() {
        assert_eq!(Answerer::from_answered_by(Some("human")), Answerer::Person);
        assert_eq!(Answerer::from_answered_by(None), Answerer::Person);
        assert_eq!(
            Answerer::from_answered_by(Some("unknown")),
            Answerer::Person
        );
        for machine in [
            "machine_end_beep",
            "machine_end_silence",
            "machine_end_other",
            "machine_start",
        ] {
            assert_eq!(Answerer::from_answered_by(Some(machine)), Answerer::Machine);
        }
        assert_eq!(Answerer::from_answered_by(Some("fax")), Answerer::Fax);
        let text = voicemail_instructions("Bright Smile Dental", "");
        assert!(text.contains("Bright Smile Dental") && text.contains("answering machine"));
        assert!(
            voicemail_instructions("X", "Your visit is Tuesday.")
                .contains("Your visit is Tuesday.")
        );
    }
}
