//! The standard `process_*` metrics of the Prometheus client libraries, read from `/proc` when
//! scraped: CPU time, memory, open and allowed file descriptors, start time. Nothing is kept
//! between scrapes. Off Linux they are left out.

use std::fmt::Write as _;

/// Append the process metrics to `out` (nothing where `/proc` cannot be read).
pub(super) fn render(out: &mut String) {
    let Some(p) = read() else { return };
    let metrics: [(&str, &str, &str, f64); 6] = [
        (
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            p.max_fds,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            p.start_time_seconds,
        ),
    ];
    for (name, help, kind, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// One reading of the process's figures.
struct Process {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time_seconds: f64,
}

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time_s: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let fields = StatFields::parse(&stat)?;
    let ticks = sysconf(libc::_SC_CLK_TCK)?;
    let page = sysconf(libc::_SC_PAGESIZE)?;
    Some(Process {
        cpu_seconds: (fields.utime + fields.stime) as f64 / ticks,
        resident_bytes: fields.rss_pages as f64 * page,
        virtual_bytes: fields.vsize as f64,
        // The directory listing holds the descriptor that reads it too, as every client counts.
        open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
        max_fds: max_fds()?,
        start_time_seconds: boot_time_s + fields.starttime as f64 / ticks,
    })
}

/// The fields of `/proc/self/stat` used here (proc(5) numbering: utime 14, stime 15, starttime
/// 22, vsize 23, rss 24).
#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl StatFields {
    fn parse(stat: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces or `)`: the fields
        // after the last `)` start at field 3.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf reads a configuration value and has no memory effects.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as f64)
}

fn max_fds() -> Option<f64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as a thread may be named.
        let stat = "4242 (gpu scout) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 987654321 5120 18446744073709551615";
        let fields = StatFields::parse(stat).expect("parsed");
        assert_eq!(
            fields,
            StatFields {
                utime: 150,
                stime: 25,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 5120,
            }
        );
    }

    #[test]
    fn this_process_is_read() {
        let p = read().expect("/proc is readable on Linux");
        assert!(p.resident_bytes > 1e6, "{}", p.resident_bytes);
        assert!(p.open_fds >= 3.0 && p.open_fds <= p.max_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(p.start_time_seconds > now - 3600.0 && p.start_time_seconds <= now + 1.0);
    }
}
