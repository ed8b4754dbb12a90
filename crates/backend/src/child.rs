//! Child processes that must not outlive the process that started them.

use tokio::process::Command;

/// Asks the kernel to send the child SIGTERM when its parent dies, however it dies (SIGKILL,
/// OOM killer, abort). `kill_on_drop` covers only an orderly exit; an orphaned model server or
/// node would keep its memory and its port with nobody left to stop it.
///
/// The signal follows the spawning *thread*, not the process: callers spawn from tokio runtime
/// threads, which live as long as the process.
#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe and touches no parent memory after fork.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {}
