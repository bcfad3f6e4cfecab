//! Shutting a server down on SIGINT (Ctrl-C) or SIGTERM (how systemd, Docker and
//! Kubernetes stop a service). On Unix through `signal-hook`, which adds to the handlers a
//! process has rather than replacing them, and leaves every other signal alone (`SIGHUP`
//! stays ignored under `nohup`); elsewhere Ctrl-C, through `ctrlc`.

use std::io;

use super::ServerHandle;

/// Shuts the server of `handle` down when the process first gets SIGINT or SIGTERM. The
/// handlers are installed when this returns.
#[cfg(unix)]
pub(super) fn shutdown_on_signal(handle: ServerHandle) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("wsline-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "shutting down on a signal");
                handle.shutdown();
            }
        })?;
    Ok(())
}

/// Shuts the server of `handle` down on Ctrl-C.
#[cfg(not(unix))]
pub(super) fn shutdown_on_signal(handle: ServerHandle) -> io::Result<()> {
    ctrlc::set_handler(move || handle.shutdown()).map_err(io::Error::other)
}
