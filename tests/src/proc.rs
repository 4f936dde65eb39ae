//! ProcessCtl (RELIABILITY.md): the project's binaries run as real processes for the fault and
//! soak tests — spawned with their stderr in a log file, killed with SIGKILL or stopped with
//! SIGTERM, and measured (RSS, CPU) from `/proc`.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process that is SIGKILLed when dropped (a failing test leaves nothing behind).
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `bin args…` with stdout discarded and stderr appended to `log`.
    ///
    /// # Errors
    /// The log cannot be opened or the binary cannot be started.
    pub fn spawn(bin: &Path, args: &[&str], log: &Path) -> std::io::Result<Self> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self { child })
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap: what `kill -9`, the OOM killer or a power cut leave behind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after that). Returns the exit
    /// status if the process ended by itself within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    /// Resident set size in KiB.
    #[must_use]
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib_of(&self.pid().to_string())
    }

    /// CPU time (user + system) used so far.
    #[must_use]
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time_of(&self.pid().to_string())
    }

    /// Open file descriptors.
    #[must_use]
    pub fn fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ok()
            .map(Iterator::count)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `VmRSS` of `/proc/<pid>/status` in KiB (`pid` may be `self`).
#[must_use]
pub fn rss_kib_of(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of `/proc/<pid>/stat` (clock ticks of 10 ms; `pid` may be `self`).
#[must_use]
pub fn cpu_time_of(pid: &str) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One Prometheus sample: the sum of every series of `name` in an exposition text (0 if absent).
#[must_use]
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_labelled_series_and_ignores_prefixes() {
        let t = "# TYPE a counter\na{x=\"1\"} 2\na{x=\"2\"} 3\nab 100\na 1\n";
        assert!((metric_sum(t, "a") - 6.0).abs() < f64::EPSILON);
        assert!((metric_sum(t, "zz")).abs() < f64::EPSILON);
    }

    #[test]
    fn own_process_is_measurable() {
        assert!(rss_kib_of("self").is_some_and(|k| k > 0));
        assert!(cpu_time_of("self").is_some());
    }
}
