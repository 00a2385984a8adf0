//! The exit-code policy: user errors (bad flags, files, configs, out of memory) exit 2 with one
//! line naming what to fix; a run that diverged exits 3 and one that lost a peer 4 (both with
//! what to resume from); anything else is a bug and exits 1 with where it happened.

use std::process::ExitCode;

/// Bad arguments are user errors too: one line (clap's usage hint joined in), exit 2.
/// `--help` and `--version` print and exit 0 as clap does.
pub fn usage_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        e.exit();
    }
    let text = e.to_string();
    let mut msg = String::new();
    for l in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
    {
        if !msg.is_empty() {
            msg.push_str(if msg.ends_with(':') { " " } else { "; " });
        }
        msg.push_str(l);
    }
    eprintln!("{msg} (see --help)");
    ExitCode::from(2)
}

/// The exit code of a finished command. A panic is a bug (the hook has printed it) and exits 1,
/// except running out of memory, which the user fixes with smaller settings: exit 2.
pub fn finish(outcome: std::thread::Result<anyhow::Result<()>>) -> ExitCode {
    let result = match outcome {
        Ok(r) => r,
        Err(p) => {
            return ExitCode::from(if out_of_memory(&panic_text(&*p)).is_some() { 2 } else { 1 })
        }
    };
    let Err(e) = result else { return ExitCode::SUCCESS };
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<promptir::Error>())
        .map_or(promptir::error::exit::BUG, promptir::Error::exit_code);
    // Our errors already print their source; skip causes the message so far contains.
    let mut msg = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !msg.contains(&cause) {
            msg = if msg.is_empty() { cause } else { format!("{msg}: {cause}") };
        }
    }
    // One line, whatever a cause (a tool's output, a library) put in it.
    let msg: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    eprintln!("error: {}", msg.join("; "));
    ExitCode::from(code)
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// libtorch's allocation failures (tch unwraps them into panics inside ops): `Some(what it tried
/// to allocate)`, e.g. "88080384 bytes" (CPU) or "20.00 MiB" (CUDA).
fn out_of_memory(msg: &str) -> Option<String> {
    let oom = ["can't allocate memory", "not enough memory", "out of memory"];
    if !oom.iter().any(|m| msg.contains(m)) {
        return None;
    }
    let size = msg
        .find("ried to allocate ") // "you tried to" (CPU), "Tried to" (CUDA)
        .map(|i| &msg[i + "ried to allocate ".len()..])
        .and_then(|rest| rest.split(". ").next())
        .filter(|s| s.len() < 40);
    Some(size.unwrap_or("more memory").to_string())
}

/// Panics are bugs, reported in one line with where they happened; libtorch's C++ stack trace
/// (inside tch's unwrap messages) is cut. Running out of memory is said as such, with what to
/// lower. `RUST_BACKTRACE` set keeps Rust's full report.
pub fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_text(info.payload());
        if let Some(size) = out_of_memory(&msg) {
            eprintln!(
                "error: out of memory (libtorch could not allocate {size}); lower train.batch_size or train.patch_size when training, use --tile (or smaller images) to restore, or free memory"
            );
            return;
        }
        // tch's messages hold the trace as real or as escaped ("\\n") newlines.
        let first = msg.split('\n').next().unwrap_or("").split("\\n").next().unwrap_or("");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!(
            "error: internal error{}: {first} (a bug in promptir; rerun with RUST_BACKTRACE=1 and report it)",
            at.unwrap_or_default()
        );
    }));
}
