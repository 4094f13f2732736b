//! The JSON log lines a test's own thread writes, to check what the functions log (never a
//! secret, the task id in each line's span). Tests only (this crate's own, and others' through
//! the `test-support` feature).

use std::sync::{Arc, Mutex, Once};

thread_local! {
    /// Where the log lines of this thread's test go, if it captures them.
    static CAPTURE: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// The log lines captured so far on one test's thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far, one JSON object per line.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// The lines logged so far whose text contains `fragment`, in order.
    pub fn lines_with(&self, fragment: &str) -> Vec<Line> {
        self.text().lines().filter(|text| text.contains(fragment)).map(Line::read).collect()
    }
}

/// One captured line: the level it was logged at, and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: tracing::Level,
    pub text: String,
}

impl Line {
    fn read(text: &str) -> Line {
        let json: serde_json::Value = serde_json::from_str(text).expect("one JSON object per line");
        let level = json["level"].as_str().and_then(|l| l.parse().ok()).expect("a line's level");
        Line { level, text: text.to_owned() }
    }

    /// Whether the line was logged at `level` and its text contains every one of `fragments`.
    pub fn is(&self, level: tracing::Level, fragments: &[&str]) -> bool {
        self.level == level && fragments.iter().all(|f| self.text.contains(f))
    }
}

/// Writes to the capture of the current thread, or nowhere.
struct ThreadCapture;

impl std::io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with_borrow(|c| {
            if let Some(c) = c {
                c.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture the JSON logs (debug and up) of the current thread from now on. One global
/// subscriber for the whole test binary: a thread-scoped one (`set_default`) races with other
/// tests' threads registering the same callsites, which then stay disabled for it.
pub fn capture_logs() -> Captured {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(|| ThreadCapture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of the tests");
    });
    let captured = Captured::default();
    CAPTURE.set(Some(captured.clone()));
    captured
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn a_line_is_read_with_its_level_and_found_by_its_text() {
        let captured = super::capture_logs();
        tracing::info!(task_id = "t1", "stored");
        tracing::warn!("stored again, a \"quoted\" word");
        let lines = captured.lines_with("stored");
        assert_eq!(lines.iter().map(|l| l.level).collect::<Vec<_>>(), [Level::INFO, Level::WARN]);
        assert!(lines[0].is(Level::INFO, &["stored", r#""task_id":"t1""#]) && !lines[0].is(Level::WARN, &[]));
        assert!(!lines[0].is(Level::INFO, &["stored", "again"]));
        assert!(captured.lines_with("nothing like it").is_empty());
    }
}
