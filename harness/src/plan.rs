//! Expands workloads x backends into cells. Unavailable backends are kept in the plan with
//! their reason and get no cells.

use anyhow::{bail, Result};
use std::ffi::OsString;
use vbench_backends::{Availability, Backend, Program};
use vbench_results::{BackendStatus, Cell};
use vbench_workloads::{Class, ParamKind, Task, TASKS};

/// What to run: the embedded workload's tasks, or a user's own program.
pub enum Subject {
    /// Catalogue tasks of the embedded workload.
    Tasks {
        program: Program,
        tasks: Vec<&'static Task>,
        quick: bool,
    },
    /// A user's static binary and its arguments.
    Custom {
        program: Program,
        args: Vec<OsString>,
    },
}

/// One cell and how to run it.
pub struct CellPlan {
    pub cell: Cell,
    pub backend: usize,
    pub program: Program,
    pub argv: Vec<OsString>,
    /// Whether the program must print a result line (catalogue tasks).
    pub expects_report: bool,
}

/// The expanded plan.
pub struct RunPlan {
    pub cells: Vec<CellPlan>,
    pub backends: Vec<BackendStatus>,
}

/// Picks catalogue tasks by name and class; no filter means every task.
pub fn select_tasks(names: &[String], classes: &[String]) -> Result<Vec<&'static Task>> {
    for n in names {
        if vbench_workloads::find(n).is_none() {
            let known: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
            bail!(
                "unknown workload {n:?}; known workloads: {}",
                known.join(", ")
            );
        }
    }
    let mut want_classes = Vec::new();
    for c in classes {
        match Class::parse(c) {
            Some(c) => want_classes.push(c),
            None => bail!("unknown workload class {c:?}; classes are cpu, mem, sys"),
        }
    }
    let all = names.is_empty() && classes.is_empty();
    Ok(TASKS
        .iter()
        .filter(|t| all || names.iter().any(|n| n == t.name) || want_classes.contains(&t.class))
        .collect())
}

/// The arguments that run `task` with its default (or quick) parameters.
pub fn task_args(task: &Task, quick: bool) -> Vec<String> {
    let mut args = vec![task.name.to_string()];
    for p in task.params {
        let v = match p.kind {
            ParamKind::Int {
                default, quick: q, ..
            } => (if quick { q } else { default }).to_string(),
            ParamKind::Str { default } => default.to_string(),
        };
        args.push(format!("{}={v}", p.name));
    }
    args
}

/// Expands the subject over the requested backends. `requested` holds indexes into `all`.
pub fn build(subject: &Subject, all: &[Box<dyn Backend>], requested: &[usize]) -> RunPlan {
    let mut backends = Vec::new();
    let mut usable = Vec::new();
    for &i in requested {
        let b = &all[i];
        match b.availability() {
            Availability::Available => {
                usable.push(i);
                backends.push(BackendStatus {
                    name: b.name().into(),
                    available: true,
                    reason: None,
                    peer: b.is_peer(),
                    colour: vbench_backends::registry::colour(b.name()).map(Into::into),
                })
            }
            Availability::Unavailable(reason) => backends.push(BackendStatus {
                name: b.name().into(),
                available: false,
                reason: Some(reason),
                peer: b.is_peer(),
                colour: vbench_backends::registry::colour(b.name()).map(Into::into),
            }),
        }
    }
    let mut cells = Vec::new();
    let mut push = |workload: String,
                    class: String,
                    op: String,
                    program: &Program,
                    args: Vec<OsString>,
                    expects_report: bool| {
        for &b in &usable {
            let id = cells.len();
            cells.push(CellPlan {
                cell: Cell {
                    id,
                    workload: workload.clone(),
                    class: class.clone(),
                    backend: all[b].name().into(),
                    args: args
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                    op: op.clone(),
                },
                backend: b,
                program: program.clone(),
                argv: args.clone(),
                expects_report,
            });
        }
    };
    match subject {
        Subject::Tasks {
            program,
            tasks,
            quick,
        } => {
            for t in tasks {
                let args = task_args(t, *quick)
                    .into_iter()
                    .map(OsString::from)
                    .collect();
                push(
                    t.name.into(),
                    t.class.name().into(),
                    t.op.into(),
                    program,
                    args,
                    true,
                );
            }
        }
        Subject::Custom { program, args } => {
            let name = program
                .path()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.name());
            push(
                format!("custom:{name}"),
                "custom".into(),
                "run".into(),
                program,
                args.clone(),
                false,
            );
        }
    }
    RunPlan { cells, backends }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_name_and_class() {
        assert_eq!(select_tasks(&[], &[]).unwrap().len(), TASKS.len());
        let sys = select_tasks(&[], &["sys".into()]).unwrap();
        assert!(!sys.is_empty() && sys.iter().all(|t| t.class == Class::Sys));
        let one = select_tasks(&["sha256".into()], &[]).unwrap();
        assert_eq!(one.len(), 1);
        let e = select_tasks(&["nope".into()], &[]).unwrap_err().to_string();
        assert!(
            e.contains("unknown workload \"nope\"") && e.contains("sha256"),
            "{e}"
        );
        assert!(select_tasks(&[], &["gpu".into()]).is_err());
    }

    #[test]
    fn args_carry_every_parameter() {
        let t = vbench_workloads::find("getpid").unwrap();
        let a = task_args(t, true);
        assert_eq!(a[0], "getpid");
        assert!(a.iter().any(|x| x.starts_with("iters=")));
    }

    #[test]
    fn unavailable_backends_get_no_cells() {
        let all = vbench_backends::all();
        let program = Program::Path("/bin/true".into());
        let subject = Subject::Custom {
            program,
            args: vec![],
        };
        let plan = build(&subject, &all, &[0, 3]);
        assert_eq!(plan.backends.len(), 2);
        assert!(plan.backends[0].available);
        assert_eq!(
            plan.cells.len(),
            usize::from(all[3].availability().is_available()) + 1
        );
        assert_eq!(plan.cells[0].cell.workload, "custom:true");
    }
}
