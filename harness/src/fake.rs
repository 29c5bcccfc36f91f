//! A scripted backend for tests of the scheduler without processes (hyperfine's mock
//! executor is the model): it records each call and answers as its script says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vbench_backends::{Availability, Backend, BackendError, Invocation, Outcome};
use vbench_results::{Exit, Sample};

/// What the fake answers for one call.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// Ran and exited 0.
    Ok,
    /// Ran and exited with this status.
    Exit(i32),
    /// Could not run at all.
    Error(&'static str),
}

type Script = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// The fake backend `fake`. A call is named by its first argument (the cell's tag); the script
/// gets the tag and how many calls with that tag came before.
pub struct Scripted {
    script: Box<Script>,
    calls: Arc<Mutex<Vec<String>>>,
    per_tag: Mutex<HashMap<String, usize>>,
    cancel: Arc<AtomicBool>,
    cancel_during: Option<usize>,
}

impl Scripted {
    /// Answers as `script` says.
    pub fn new(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Scripted {
        Scripted {
            script: Box::new(script),
            calls: Arc::default(),
            per_tag: Mutex::default(),
            cancel: Arc::default(),
            cancel_during: None,
        }
    }

    /// Every run succeeds.
    pub fn ok() -> Scripted {
        Scripted::new(|_, _| Reply::Ok)
    }

    /// Call number `n` (from 0, over all cells) is interrupted: the fake raises the cancel
    /// flag while it runs, as SIGINT would, and the run ends as interrupted.
    pub fn cancel_during(mut self, n: usize) -> Scripted {
        self.cancel_during = Some(n);
        self
    }

    /// The flag the fake raises (give it to the scheduler as its cancel flag).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// The tags of the calls so far, in order.
    pub fn calls_handle(&self) -> Arc<Mutex<Vec<String>>> {
        self.calls.clone()
    }
}

impl Backend for Scripted {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn describe(&self) -> &'static str {
        "scripted test backend"
    }

    fn availability(&self) -> Availability {
        Availability::Available
    }

    fn run(&self, inv: &Invocation) -> Result<Outcome, BackendError> {
        let tag = inv
            .args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let call = {
            let mut calls = self.calls.lock().expect("not poisoned");
            calls.push(tag.clone());
            calls.len() - 1
        };
        let nth = {
            let mut per_tag = self.per_tag.lock().expect("not poisoned");
            let n = per_tag.entry(tag.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let stdout = format!("{tag}\n").into_bytes();
        let sample = |exit| Sample {
            wall_ns: 1_000_000 + call as u64,
            user_ns: 500_000,
            exit,
            stdout_bytes: stdout.len() as u64,
            ..Sample::default()
        };
        if self.cancel_during == Some(call) {
            self.cancel.store(true, Ordering::Relaxed);
            return Ok(Outcome {
                sample: sample(Exit::Interrupted),
                stdout: Vec::new(),
            });
        }
        match (self.script)(&tag, nth) {
            Reply::Ok => Ok(Outcome {
                sample: sample(Exit::Code { code: 0 }),
                stdout,
            }),
            Reply::Exit(code) => Ok(Outcome {
                sample: sample(Exit::Code { code }),
                stdout,
            }),
            Reply::Error(why) => Err(BackendError::Os {
                what: why.into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            }),
        }
    }
}
