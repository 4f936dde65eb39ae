//! One holder at a time for singleton work (issue #22): a lease in the store, renewed in the
//! background while held, checked before every write made under it.
//!
//! The store ([`crate::store`]'s `lease_*`) makes taking a lease atomic and numbers each
//! acquisition (the fencing token). This module adds the policy: who this process is, waiting
//! for a lease with a deadline, renewal every third of the lease's time, and a local deadline
//! so that a holder that cannot renew (database unreachable, process paused) stops writing
//! before anyone else can take the lease. A holder on this machine that died (kill -9) is
//! displaced at once instead of after its lease expires: its identity names its process, its
//! start time, and the boot and PID namespace it ran in, so the check never mistakes another
//! machine's or container's process for a dead one here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::{Fence, LeaseHolder, Store, StoreError};

/// Default lease time: a holder that stops renewing loses it after this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// A held lease. Dropping it stops the renewal (the lease then expires); [`Lease::release`]
/// gives it up at once.
#[derive(Debug)]
pub struct Lease {
    store: Store,
    fence: Fence,
    shared: Arc<Shared>,
    renewer: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    /// Writes stop at this instant unless a renewal moves it: the start of the last successful
    /// renewal plus the lease time, which is never later than the database's own expiry.
    valid_until: std::sync::Mutex<Instant>,
    /// The database said the lease is no longer ours.
    lost: AtomicBool,
}

impl Lease {
    /// Takes lease `name` if no live holder has it; otherwise says who holds it.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn try_acquire(
        store: &Store,
        name: &str,
        ttl: Duration,
    ) -> Result<Result<Self, LeaseHolder>, StoreError> {
        static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // One holder per acquisition: two passes of one process exclude each other too.
        let me = format!("{} n={}", holder_id(), TAKEN.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        let mut token = store.lease_acquire(name, &me, ttl, None).await?;
        if token.is_none()
            && let Some(h) = store.lease_holder(name).await?
            && h.live()
            && holder_is_dead(&h.holder)
        {
            tracing::info!(lease = name, holder = %h.holder, "Lease holder on this machine is gone; taking its lease over.");
            token = store.lease_acquire(name, &me, ttl, Some(&h.holder)).await?;
        }
        let Some(token) = token else {
            return match store.lease_holder(name).await? {
                Some(h) => Ok(Err(h)),
                // Released between the two statements: try again next time.
                None => Ok(Err(LeaseHolder {
                    holder: "(unknown)".into(),
                    token: 0,
                    expires_in_ms: 0,
                    acquired_at: String::new(),
                })),
            };
        };
        let fence = Fence {
            name: name.to_owned(),
            holder: me,
            token,
        };
        let shared = Arc::new(Shared {
            valid_until: std::sync::Mutex::new(started + ttl),
            lost: AtomicBool::new(false),
        });
        let renewer = tokio::spawn(renew(store.clone(), fence.clone(), ttl, shared.clone()));
        tracing::debug!(lease = name, token, "Lease taken.");
        Ok(Ok(Self {
            store: store.clone(),
            fence,
            shared,
            renewer,
        }))
    }

    /// [`Lease::try_acquire`], waiting up to `wait` for the holder to finish; `waiting` is told
    /// each holder waited for (once per holder). Returns the last holder when `wait` ran out.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn acquire(
        store: &Store,
        name: &str,
        ttl: Duration,
        wait: Duration,
        mut waiting: impl FnMut(&LeaseHolder),
    ) -> Result<Result<Self, LeaseHolder>, StoreError> {
        let deadline = Instant::now() + wait;
        let mut told: Option<(String, i64)> = None;
        let mut pause = Duration::from_millis(100);
        loop {
            let held = match Self::try_acquire(store, name, ttl).await? {
                Ok(lease) => return Ok(Ok(lease)),
                Err(h) => h,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Err(held));
            }
            if told.as_ref() != Some(&(held.holder.clone(), held.token)) {
                waiting(&held);
                told = Some((held.holder.clone(), held.token));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Whether writes may still be made under this lease.
    ///
    /// # Errors
    /// Why not: taken over by another holder, or not renewed in time.
    pub fn check(&self) -> Result<(), String> {
        if self.shared.lost.load(Ordering::Acquire) {
            return Err(format!(
                "lease {} (token {}) was taken over by another holder; this pass stops writing",
                self.fence.name, self.fence.token
            ));
        }
        let until = *self
            .shared
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Instant::now() >= until {
            return Err(format!(
                "lease {} (token {}) could not be renewed in time (database unreachable or process paused); this pass stops writing",
                self.fence.name, self.fence.token
            ));
        }
        Ok(())
    }

    /// The fence store writes under this lease are checked against.
    #[must_use]
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Gives the lease up now, so the next holder need not wait for it to expire.
    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.store.lease_release(&self.fence).await {
            tracing::warn!(lease = %self.fence.name, error = %e, "Cannot release the lease; it expires by itself.");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Leadership among the collectors sharing one database (issue #22): the holder of the lease
/// [`LEADER`] runs the singleton jobs (ITSM, KPI history and the CMDB refreshes, compaction,
/// power publishing); every collector keeps ingesting. A background task takes the lease when
/// it is free and keeps it renewed; a collector that cannot renew (database unreachable, paused)
/// stops being the leader at its local deadline, before another can take over, so two never
/// run the jobs at once. With SQLite the one collector is the leader.
#[derive(Debug, Clone)]
pub struct Leadership {
    current: Arc<std::sync::Mutex<Option<Lease>>>,
}

/// The lease leadership is held by.
pub const LEADER: &str = "collector leader";

impl Leadership {
    /// Starts campaigning: tries to take the lease now (so a lone collector leads from its first
    /// job on), then every third of `ttl` while not leader.
    pub async fn start(store: Store, ttl: Duration) -> Self {
        let current: Arc<std::sync::Mutex<Option<Lease>>> = Arc::default();
        let me = Self {
            current: current.clone(),
        };
        match Lease::try_acquire(&store, LEADER, ttl).await {
            Ok(Ok(lease)) => {
                tracing::info!(
                    token = lease.fence().token,
                    "Leader of the collectors: running the singleton jobs."
                );
                *current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lease);
            }
            Ok(Err(h)) => {
                tracing::info!(leader = %h.holder, "Another collector leads; this one ingests only.")
            }
            Err(e) => tracing::warn!(error = %e, "Cannot campaign for leadership; will retry."),
        }
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let holding = {
                    let mut cur = current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match cur.as_ref().map(Lease::check) {
                        Some(Ok(())) => true,
                        Some(Err(why)) => {
                            tracing::error!(reason = %why, "No longer the leader; singleton jobs stop here.");
                            *cur = None;
                            false
                        }
                        None => false,
                    }
                };
                if !holding {
                    match Lease::try_acquire(&store, LEADER, ttl).await {
                        Ok(Ok(lease)) => {
                            tracing::info!(
                                token = lease.fence().token,
                                "Leader of the collectors: running the singleton jobs."
                            );
                            *current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lease);
                        }
                        Ok(Err(h)) => tracing::debug!(leader = %h.holder, "Another collector leads."),
                        Err(e) => tracing::warn!(error = %e, "Cannot campaign for leadership; will retry."),
                    }
                }
            }
        });
        me
    }

    /// Whether this collector may run the singleton jobs now.
    #[must_use]
    pub fn held(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|l| l.check().is_ok())
    }
}

/// Renews every third of the lease time; stops at the first answer that the lease is gone.
async fn renew(store: Store, fence: Fence, ttl: Duration, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let started = Instant::now();
        match store.lease_renew(&fence, ttl).await {
            Ok(true) => {
                *shared
                    .valid_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = started + ttl;
            }
            Ok(false) => {
                shared.lost.store(true, Ordering::Release);
                tracing::error!(lease = %fence.name, token = fence.token, "Lease lost (expired and taken, or released elsewhere); writes under it stop.");
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %fence.name, error = %e, "Cannot renew the lease; writes stop when it runs out.");
            }
        }
    }
}

/// This process as a lease holder: `host=… pid=… start=… boot=… pidns=…` (each acquisition
/// appends its own number).
#[must_use]
pub fn holder_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let pid = std::process::id();
        let start = proc_start(pid).map_or_else(|| "?".into(), |(s, _)| s);
        let (boot, ns) = machine_scope();
        format!("host={host} pid={pid} start={start} boot={boot} pidns={ns}")
    })
    .clone()
}

/// This kernel's boot id (short) and this process's PID namespace: where a PID means something.
fn machine_scope() -> (String, String) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| {
            b.trim()
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(12)
                .collect()
        })
        .unwrap_or_else(|_| "?".into());
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            Some(p.strip_prefix("pid:[")?.strip_suffix(']')?.to_owned())
        })
        .unwrap_or_else(|| "?".into());
    (boot, ns)
}

/// A process's start time (clock ticks after boot) and state letter, from `/proc/PID/stat`.
fn proc_start(pid: u32) -> Option<(String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some(((*fields.get(19)?).to_owned(), state))
}

/// True only when `holder` is provably a process of this machine and PID namespace that is no
/// longer running (gone, a zombie, or its PID reused by a later process).
fn holder_is_dead(holder: &str) -> bool {
    let field = |k: &str| {
        holder
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    let (boot, ns) = machine_scope();
    if boot == "?" || ns == "?" || field("boot") != Some(&boot) || field("pidns") != Some(&ns) {
        return false;
    }
    let (Some(pid), Some(start)) = (field("pid").and_then(|p| p.parse::<u32>().ok()), field("start")) else {
        return false;
    };
    if start == "?" || pid == std::process::id() {
        return false;
    }
    match proc_start(pid) {
        None => true,
        Some((s, state)) => s != start || matches!(state, 'Z' | 'X'),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::testdb::TestDb;

    #[test]
    fn a_live_process_is_alive_and_a_finished_one_dead() {
        let me = holder_id();
        assert!(me.contains(&format!("pid={}", std::process::id())), "{me}");
        assert!(!holder_is_dead(&me), "this process is alive");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let (start, _) = proc_start(pid).unwrap();
        let (boot, ns) = machine_scope();
        let other = format!("host=x pid={pid} start={start} boot={boot} pidns={ns}");
        assert!(!holder_is_dead(&other), "a running child is alive");
        child.kill().unwrap();
        // Killed but not yet reaped: a zombie counts as dead.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !holder_is_dead(&other) {
            assert!(Instant::now() < deadline, "killed child never seen dead");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(holder_is_dead(&other), "a reaped child is dead");
        // Another start time on the same PID is another process; another boot or namespace is
        // nothing this machine can judge.
        let reused = format!("host=x pid={} start=1 boot={boot} pidns={ns}", std::process::id());
        assert!(!holder_is_dead(&reused), "this very PID is never judged");
        let elsewhere = format!("host=x pid={pid} start={start} boot=000000000000 pidns={ns}");
        assert!(!holder_is_dead(&elsewhere));
        assert!(!holder_is_dead("someone else entirely"));
    }

    /// Two collectors on one store: one leader at a time; when the leader's process goes (its
    /// campaign and renewal stop), the other takes over within two lease periods.
    #[test]
    fn one_leader_at_a_time_and_a_takeover_within_two_lease_periods() {
        let t = TestDb::sqlite();
        let ttl = Duration::from_millis(900);
        let first_rt = tokio::runtime::Runtime::new().unwrap();
        let store = first_rt.block_on(t.store()).unwrap();
        let first = first_rt.block_on(Leadership::start(store.clone(), ttl));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !first.held() {
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(20));
        }
        let second_rt = tokio::runtime::Runtime::new().unwrap();
        let second_store = second_rt.block_on(t.store()).unwrap();
        let second = second_rt.block_on(Leadership::start(second_store, ttl));
        std::thread::sleep(ttl * 2);
        assert!(
            first.held() && !second.held(),
            "one leader while the first renews"
        );
        // The first collector's runtime goes (as its process would): no renewal, no release.
        drop(first_rt);
        let gone = Instant::now();
        while !second.held() {
            assert!(
                gone.elapsed() < ttl * 2 + ttl / 2,
                "no takeover within two lease periods"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!first.held(), "the old leader's own check says it is not leader");
        drop(second_rt);
    }

    #[tokio::test]
    async fn a_second_taker_waits_for_the_release_and_a_lost_lease_stops_writes() {
        let t = TestDb::sqlite();
        let store = t.store().await.unwrap();
        let ttl = Duration::from_secs(30);
        let first = Lease::try_acquire(&store, "sync", ttl).await.unwrap().unwrap();
        first.check().unwrap();
        // Two passes of one process are two holders.
        let held = Lease::try_acquire(&store, "sync", ttl)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(held.holder, first.fence().holder);
        assert!(held.holder.starts_with(&holder_id()), "{}", held.holder);
        let mut seen = Vec::new();
        let r = Lease::acquire(&store, "sync", ttl, Duration::from_millis(300), |h| {
            seen.push(h.holder.clone());
        })
        .await
        .unwrap();
        assert_eq!(r.unwrap_err().holder, first.fence().holder);
        assert_eq!(seen, [first.fence().holder.clone()], "told once per holder");
        // Released while the next one waits: it gets the lease, with a larger token.
        let token = first.fence().token;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            first.release().await;
        });
        // (A short lease time: renewed every second, so the takeover below is found soon.)
        let second = Lease::acquire(
            &store,
            "sync",
            Duration::from_secs(3),
            Duration::from_secs(10),
            |_| {},
        )
        .await
        .unwrap()
        .unwrap();
        release.await.unwrap();
        assert!(second.fence().token > token);
        // Taken over after an expiry: the renewal finds out and writes stop.
        store.lease_release(second.fence()).await.unwrap();
        let third = Lease::try_acquire(&store, "sync", ttl).await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while second.check().is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            second.check().unwrap_err().contains("taken over"),
            "{:?}",
            second.check()
        );
        third.check().unwrap();
        third.release().await;
        // Not renewed in time (the database gone, the process paused): writes stop by the local
        // deadline alone.
        let short = Duration::from_millis(300);
        let mine = Lease::try_acquire(&store, "sync", short).await.unwrap().unwrap();
        mine.renewer.abort();
        let deadline = Instant::now() + Duration::from_secs(10);
        while mine.check().is_ok() {
            assert!(
                Instant::now() < deadline,
                "an unrenewed lease never stopped writes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(mine.check().unwrap_err().contains("could not be renewed"));
    }
}
