//! How much of the cores the compactor takes: only what the rest of the process leaves idle
//! while it keeps up, a low but real share once it falls behind.
//!
//! At a low priority (nice 10) the compactor still counts as a busy thread: the kernel puts a
//! thread the process wakes (the helpers that decode a body or fold a batch into a view on
//! every core) behind another busy thread of the process rather than on the compactor's core,
//! so the halves of a parallel step ran one after the other on one core while compaction held
//! the other (docs/performance.md, session 27). At idle priority (`SCHED_IDLE`) the kernel
//! treats the compactor's core as free: a woken thread takes it at once. An idle thread may
//! get no time at all on a saturated machine, so once the tables' uncompacted segments hold
//! more than three parts' worth of rows ([`super::Storage::idle_backlog_max`]), the
//! compactor goes back to nice 10, raised by the writer that sees the backlog if the
//! compactor is starved mid-round. A thread may leave idle priority only with `CAP_SYS_NICE`
//! or an `RLIMIT_NICE` of 10 or more: without either, the compactor stays at nice 10 all
//! along, as before.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The compactor's thread and the priority it runs at.
#[derive(Default)]
pub(crate) struct CompactorPriority {
    /// The compactor's thread id (0 until it starts).
    tid: AtomicI32,
    /// True while it runs at idle priority.
    idle: AtomicBool,
}

impl CompactorPriority {
    /// Called by the compactor's thread as it starts: it is the thread to pace, at nice 10
    /// until its first round.
    pub(crate) fn register_current_thread(&self) {
        let tid = current_tid();
        self.tid.store(tid, Ordering::SeqCst);
        set_low(tid);
    }

    /// Called by the compactor at the start of each round with the tables' uncompacted
    /// rows: idle priority when they are at most `bound` (and the process may leave idle
    /// priority again), nice 10 otherwise.
    pub(crate) fn pace(&self, backlog_rows: u64, bound: u64) {
        let want_idle = backlog_rows <= bound && may_leave_idle();
        if want_idle == self.idle.load(Ordering::SeqCst) {
            return;
        }
        let tid = self.tid.load(Ordering::SeqCst);
        let set = if want_idle {
            set_idle(tid)
        } else {
            set_low(tid)
        };
        if set {
            self.idle.store(want_idle, Ordering::SeqCst);
        }
    }

    /// Called by a writer with its table's uncompacted rows: past `bound`, raises an idle
    /// compactor to nice 10 at once, without waiting for its next round (a starved compactor
    /// might not reach it).
    pub(crate) fn raise_if_behind(&self, table_backlog_rows: u64, bound: u64) {
        if table_backlog_rows <= bound || !self.idle.load(Ordering::SeqCst) {
            return;
        }
        let tid = self.tid.load(Ordering::SeqCst);
        if tid != 0 && set_low(tid) {
            self.idle.store(false, Ordering::SeqCst);
        }
    }
}

/// The calling thread's id, as the kernel's scheduling calls take it (0 off Linux).
pub(crate) fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid takes no arguments and only returns the calling thread's id.
    unsafe {
        libc::syscall(libc::SYS_gettid) as i32
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Puts thread `tid` at idle priority; false when the kernel refused.
fn set_idle(tid: i32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: `param` lives across the call, which only reads it; the call changes the
    // scheduling of thread `tid` of this process and nothing else.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        false
    }
}

/// Puts thread `tid` at the normal policy with nice 10 (the compactor when behind, view
/// snapshots); false when the kernel refused.
pub(crate) fn set_low(tid: i32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: as in `set_idle`; setpriority takes no pointers.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) == 0
            && libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        false
    }
}

/// Whether a thread of this process may go from idle priority back to nice 10: with
/// `CAP_SYS_NICE`, or an `RLIMIT_NICE` of at least 10 (the kernel's bound, `20 - nice`).
fn may_leave_idle() -> bool {
    static MAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MAY.get_or_init(|| has_cap_sys_nice() || rlimit_nice() >= 10)
}

/// `CAP_SYS_NICE` (capability 23) among the process's effective capabilities.
fn has_cap_sys_nice() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

/// The soft `RLIMIT_NICE` (0 when unknown).
fn rlimit_nice() -> u64 {
    #[cfg(target_os = "linux")]
    // SAFETY: `limit` lives across the call, which writes it and nothing else.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NICE, &mut limit) == 0 {
            return limit.rlim_cur;
        }
    }
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The policy of thread `tid` as the kernel reports it.
    fn policy(tid: i32) -> i32 {
        // SAFETY: sched_getscheduler reads the policy of a thread of this process.
        unsafe { libc::sched_getscheduler(tid) }
    }

    /// A compactor with no backlog runs at idle priority, and goes back to nice 10 once its
    /// round starts behind, or once a writer sees its table behind (where the process may
    /// leave idle priority at all; otherwise it stays at nice 10 throughout).
    #[test]
    fn the_compactor_idles_while_it_keeps_up_and_is_raised_when_behind() {
        std::thread::spawn(|| {
            let pace = CompactorPriority::default();
            pace.register_current_thread();
            let me = current_tid();
            pace.pace(0, 100);
            if !may_leave_idle() {
                assert_ne!(policy(me), libc::SCHED_IDLE, "stuck at idle priority");
                return;
            }
            assert_eq!(policy(me), libc::SCHED_IDLE);
            pace.pace(101, 100);
            assert_eq!(policy(me), libc::SCHED_OTHER);
            pace.pace(100, 100);
            assert_eq!(policy(me), libc::SCHED_IDLE);
            pace.raise_if_behind(100, 100);
            assert_eq!(
                policy(me),
                libc::SCHED_IDLE,
                "a writer within bounds leaves it"
            );
            pace.raise_if_behind(101, 100);
            assert_eq!(policy(me), libc::SCHED_OTHER);
        })
        .join()
        .expect("the pacing checks pass");
    }
}
