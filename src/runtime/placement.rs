//! Where the helper pool's threads run: one on each core the process may use.
//!
//! A large body's decode and a large batch's fold into a view are split between the helpers,
//! and each step waits for its last piece. A helper the kernel left free to move was often
//! woken onto the core of the thread waking it, behind that thread, and not pulled to the
//! other core, idle or running only the idle-priority compactor, for milliseconds (traced
//! with `perf sched` on the 2-core development machine: in 53 to 57 of 180 batches of the
//! top-k, the second helper started a view's fold more than 0.5 ms after the first, 0.8 ms
//! late on average). A helper pinned to its own core runs there as soon as it is woken (12
//! to 13 batches of 180, 0.15 ms on average); see docs/performance.md, session 39.

/// The CPUs this process may run on (its affinity mask, which a container's cpuset narrows),
/// in increasing order; empty where the system does not say.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `set` is a plain bit set the call fills in; its size is passed with it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Keeps the calling thread on `cpu` from now on; false where that cannot be done (another
/// system, or a CPU the process may not use), and the thread then runs where it did.
pub(crate) fn pin_current_thread(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        // SAFETY: as above; 0 names the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

/// The CPU helper `index` of a pool of `threads` is pinned to: the index-th of `allowed`,
/// when there is one helper for each of them; `None` (the helper moves freely) otherwise,
/// where some cores would get two helpers or none.
pub(crate) fn helper_cpu(index: usize, threads: usize, allowed: &[usize]) -> Option<usize> {
    if threads != allowed.len() {
        return None;
    }
    allowed.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_helper_per_allowed_cpu_is_pinned_in_order() {
        let allowed = [2, 3, 6];
        let cpus: Vec<_> = (0..3).map(|i| helper_cpu(i, 3, &allowed)).collect();
        assert_eq!(cpus, [Some(2), Some(3), Some(6)]);
    }

    #[test]
    fn helpers_that_do_not_match_the_cpus_move_freely() {
        assert_eq!(helper_cpu(0, 2, &[0, 1, 2, 3]), None);
        assert_eq!(helper_cpu(0, 4, &[0, 1]), None);
        assert_eq!(helper_cpu(0, 1, &[]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty(), "the process may run on some CPU");
        let last = *allowed.last().expect("not empty");
        let seen = std::thread::spawn(move || {
            assert!(pin_current_thread(last));
            allowed_cpus()
        })
        .join()
        .expect("the thread ends");
        assert_eq!(seen, [last]);
        assert!(!pin_current_thread(libc::CPU_SETSIZE as usize));
    }
}
