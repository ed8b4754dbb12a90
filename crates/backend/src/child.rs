//! Child processes that must not outlive the process that started them.

use tokio::process::Command;

/// Ties the child's life to this process, both ways it can end: dropping the child's handle
/// kills it (`kill_on_drop`: an orderly exit, an abandoned load), and on Linux the kernel sends
/// it SIGKILL when this process dies however it dies (SIGKILL, OOM killer, abort). Without the
/// second, an orphaned model server or node would keep its memory and its port with nobody left
/// to stop it. SIGKILL, not SIGTERM: with its parent gone a child has nobody left to answer, and
/// a `llama-server` on SIGTERM shuts down gracefully, which once took over 5 s under load.
///
/// The kernel's signal follows the spawning *thread*, not the process: callers spawn from tokio
/// runtime threads, which live as long as the process.
pub fn die_with_parent(cmd: &mut Command) {
    cmd.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) is async-signal-safe and touches no parent memory after fork.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
