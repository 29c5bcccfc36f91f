//! Backends that are designed but not built yet. They say so through [`Availability`] and never
//! produce numbers.

use crate::{Availability, Backend, BackendError, Invocation, Outcome};

/// A backend whose implementation has not landed; it is always unavailable.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    name: &'static str,
    describe: &'static str,
    tracking: &'static str,
}

impl Backend for Planned {
    fn name(&self) -> &'static str {
        self.name
    }
    fn describe(&self) -> &'static str {
        self.describe
    }
    fn availability(&self) -> Availability {
        Availability::Unavailable(self.tracking.to_string())
    }
    fn run(&self, _inv: &Invocation) -> Result<Outcome, BackendError> {
        Err(BackendError::Unavailable {
            backend: self.name,
            reason: self.tracking.to_string(),
        })
    }
}
