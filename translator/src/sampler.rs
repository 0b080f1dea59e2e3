//! Time samples of translated code, for the monitor's choices that depend
//! on where time goes (adaptive memory access sends an instruction back to
//! the window when it is found in hot code and never misses).
//!
//! A [`Sampler`] is a timer on the CPU time of the thread that made it; at
//! each expiry the kernel signals that thread alone, and the handler notes
//! the interrupted host RIP if it lies in a registered code cache. The
//! monitor takes the samples when it has control ([`take_samples`]).
//!
//! Invariants:
//! - The handler reads its context and stores to atomics only
//!   (async-signal-safe), and runs on the thread's alternate stack when it
//!   has one (`SA_ONSTACK`: translated code may run on the
//!   return-prediction stack), with `SA_RESTART`.
//! - The timer counts the thread's CPU time, so it never fires while the
//!   thread waits (a halted guest costs no samples).
//! - Samples of one process share one ring of [`SLOTS`] entries; a sample
//!   that is not taken before the ring comes round again is lost, and a
//!   consumer ignores addresses outside its own cache.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Samples kept until taken.
pub const SLOTS: usize = 256;

static SAMPLES: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The signal of the sampling timers: a real-time signal the monitor's
/// other users of real-time signals (`kvm.rs`, `vcpu/kvm/kick.rs`) leave
/// alone.
pub fn sample_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// A sampling timer on the calling thread's CPU time; deleted on drop.
#[derive(Debug)]
pub struct Sampler {
    /// The `timer_t` (a pointer-sized handle), kept as an integer.
    timer: usize,
    /// The thread the timer signals.
    thread: std::thread::ThreadId,
}

impl Sampler {
    /// Starts sampling the calling thread every `period` of its CPU time.
    pub fn start(period: Duration) -> std::io::Result<Sampler> {
        install_handler();
        // SAFETY: gettid has no preconditions.
        let thread = unsafe { libc::gettid() };
        // SAFETY: a zeroed sigevent is valid; the fields set below make it
        // a thread-directed signal notification.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = sample_signal();
        event.sigev_notify_thread_id = thread;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and an out-parameter.
        if unsafe { libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut event, &mut timer) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let sampler = Sampler {
            timer: timer as usize,
            thread: std::thread::current().id(),
        };
        let spec = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let every = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        // SAFETY: `timer` was just created; `every` is a valid itimerspec.
        if unsafe { libc::timer_settime(timer, 0, &every, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(sampler)
    }

    /// Whether the calling thread is the one this timer samples (no
    /// system call: the monitor asks at every entry of its run loop).
    pub fn samples_this_thread(&self) -> bool {
        self.thread == std::thread::current().id()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the timer was created by `start` and is deleted once.
        unsafe { libc::timer_delete(self.timer as libc::timer_t) };
    }
}

/// Moves the samples noted since the last call into `out` (host RIPs in
/// some registered code cache, oldest first within the ring's order).
pub fn take_samples(out: &mut Vec<u64>) {
    // A load first: most slots are empty, and a swap is a locked write.
    for slot in SAMPLES.iter().filter(|s| s.load(Ordering::Relaxed) != 0) {
        let rip = slot.swap(0, Ordering::Relaxed);
        if rip != 0 {
            out.push(rip);
        }
    }
}

fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::runtime::set_handler(
            sample_signal(),
            on_sample,
            libc::SA_ONSTACK | libc::SA_RESTART,
        );
    });
}

extern "C" fn on_sample(_sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext for SA_SIGINFO handlers.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
    if crate::runtime::cache_for(rip).is_some() {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
        SAMPLES[slot].store(rip, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sampler_samples_only_its_own_thread_and_outside_caches_notes_nothing() {
        let sampler = Sampler::start(Duration::from_micros(200)).expect("timer");
        assert!(sampler.samples_this_thread());
        let other = std::thread::spawn(move || sampler.samples_this_thread());
        assert!(!other.join().expect("thread"));
        // Burn CPU time outside any code cache: the timer fires, the
        // handler sees a RIP that is not translated code and notes nothing.
        let sampler = Sampler::start(Duration::from_micros(200)).expect("timer");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        drop(sampler);
        let mut out = Vec::new();
        take_samples(&mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
