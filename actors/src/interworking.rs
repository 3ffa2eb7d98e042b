//! Interworking Function (004 §5.3): hands a CPM message to a non-CPM
//! service. Until a real gateway exists, the one implementation writes each
//! converted message to a spool directory a gateway can pick up
//! (format in docs/interworking.md).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use cpm_sip::Message;
use thiserror::Error;

use crate::Aor;

#[derive(Debug, Error)]
pub enum InterworkError {
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub trait InterworkingFunction: Send + Sync + 'static {
    /// Take over `msg` for `target`; returns a reference for the logs.
    fn convert(&self, target: &Aor, sender: &Aor, msg: &Message) -> Result<String, InterworkError>;
}

/// Writes `<unix-secs>-<pid>-<n>.msg` files into a directory: first to a
/// `.tmp` name, fsynced, then renamed, so a reader never sees half a file.
pub struct SpoolInterworking {
    dir: PathBuf,
    counter: AtomicU64,
}

impl SpoolInterworking {
    pub fn new(dir: PathBuf) -> Result<SpoolInterworking, InterworkError> {
        std::fs::create_dir_all(&dir)?;
        Ok(SpoolInterworking {
            dir,
            counter: AtomicU64::new(0),
        })
    }
}

impl InterworkingFunction for SpoolInterworking {
    fn convert(&self, target: &Aor, sender: &Aor, msg: &Message) -> Result<String, InterworkError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}", crate::unix_now(), std::process::id());
        let mut text = Vec::with_capacity(msg.body.len() + 256);
        writeln!(text, "To: {target}")?;
        writeln!(text, "From: {sender}")?;
        writeln!(text, "Date: {}", crate::unix_now())?;
        writeln!(text, "Call-ID: {}", msg.call_id().unwrap_or_default())?;
        writeln!(
            text,
            "Content-Type: {}",
            msg.header("Content-Type").unwrap_or("text/plain")
        )?;
        writeln!(text, "Content-Length: {}", msg.body.len())?;
        writeln!(text)?;
        text.extend_from_slice(&msg.body);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let fin = self.dir.join(format!("{name}.msg"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &fin)?;
        Ok(fin.display().to_string())
    }
}
