//! Text formatting shared by render and export. All times are UTC so an exported file and the
//! nodes' own logs line up without knowing the operator's timezone.

use infermesh_state::format_duration;

use crate::api::{LogLine, Timing};

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split(ms: i64) -> ((i64, u32, u32), i64, i64, i64, i64) {
    let secs = ms.div_euclid(1_000);
    let day = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    (
        civil(day),
        s / 3_600,
        s % 3_600 / 60,
        s % 60,
        ms.rem_euclid(1_000),
    )
}

/// `14:05:09.123` (UTC).
pub fn hms(ms: i64) -> String {
    let (_, h, m, s, milli) = split(ms);
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

/// `2026-05-12T14:05:09.123Z`.
pub fn iso(ms: i64) -> String {
    let ((y, mo, d), h, m, s, milli) = split(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// `20260512-140509`: sorts by time and is safe in any filename.
pub fn file_stamp(ms: i64) -> String {
    let ((y, mo, d), h, m, s, _) = split(ms);
    format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}")
}

/// "2s ago", "4m ago"; clock skew between nodes can make `then` lie in the future: "now".
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms - then_ms).max(0) / 1_000;
    if secs == 0 {
        return "now".into();
    }
    let text = if secs < 60 {
        format!("{secs}s")
    } else if secs < 3_600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h", secs / 3_600)
    } else {
        format!("{}d", secs / 86_400)
    };
    format!("{text} ago")
}

pub fn gb(v: Option<f64>) -> String {
    match v {
        Some(g) if g >= 100.0 => format!("{g:.0}G"),
        Some(g) => format!("{g:.1}G"),
        None => "-".into(),
    }
}

/// When the next round starts, as of `now_ms`, from a `timing` fetched at `fetched_ms`.
///
/// `-1` is "schedule syncing" (DESIGN §2). A known countdown that runs out before the next
/// fetch says "starting" rather than "in 0s": the node, not the deck, decides the round began.
pub fn countdown(t: &Timing, fetched_ms: i64, now_ms: i64) -> String {
    if t.seconds_until_next_round < 0 {
        return "schedule syncing".into();
    }
    if t.in_round {
        return match t.round_ends_at_ms {
            Some(end) if end > now_ms => {
                format!(
                    "running, ends in {}",
                    format_duration((end - now_ms + 999) / 1_000)
                )
            }
            _ => "round running".into(),
        };
    }
    let elapsed = (now_ms - fetched_ms).max(0) / 1_000;
    let left = t.seconds_until_next_round - elapsed;
    if left <= 0 {
        "round starting".into()
    } else {
        format!("in {}", format_duration(left))
    }
}

/// One exported log line: full timestamp, node name, level, target, message.
pub fn export_line(l: &LogLine, node_name: &str) -> String {
    format!(
        "{} {} {:5} {} {}",
        iso(l.at_ms),
        node_name,
        l.level.to_ascii_uppercase(),
        l.target,
        l.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_stamps() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        // 2026-05-12T14:05:09.123Z
        let ms = 1_778_594_709_123;
        assert_eq!(iso(ms), "2026-05-12T14:05:09.123Z");
        assert_eq!(file_stamp(ms), "20260512-140509");
        assert_eq!(hms(ms), "14:05:09.123");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn ago_words() {
        assert_eq!(ago(10_000, 8_000), "2s ago");
        assert_eq!(ago(10_000, 12_000), "now");
        assert_eq!(ago(400_000, 100_000), "5m ago");
    }

    #[test]
    fn countdown_never_says_in_0s() {
        let mut t = Timing {
            seconds_until_next_round: -1,
            ..Timing::default()
        };
        assert_eq!(countdown(&t, 0, 0), "schedule syncing");
        t.seconds_until_next_round = 240;
        assert_eq!(countdown(&t, 0, 0), "in 4m");
        assert_eq!(countdown(&t, 0, 200_000), "in 40s");
        assert_eq!(countdown(&t, 0, 240_000), "round starting");
        assert_eq!(countdown(&t, 0, 999_000), "round starting");
        t.in_round = true;
        t.round_ends_at_ms = Some(60_000);
        assert_eq!(countdown(&t, 0, 30_000), "running, ends in 30s");
    }
}
