//! `vbench exec`: any static binary under one backend, its stdio and exit status passed through.

use crate::cli::ExecArgs;
use crate::cmd::common::{backend_index, install_cancel, user_program};
use anyhow::{bail, Result};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use vbench_backends::container::Rootfs;
use vbench_backends::{AbiPolicy, Invocation, Stdio};
use vbench_results::Exit;

/// Runs `vbench exec`.
pub fn exec(a: ExecArgs) -> Result<ExitCode> {
    let mut cfg = a.container.config();
    a.files.apply(&mut cfg, &a.workdir, true);
    let all = vbench_backends::all_with(&cfg);
    let backend = &all[backend_index(&all, &a.backend)];
    if a.files.given(&a.workdir) && backend.name() != "container" {
        bail!(
            "--rootfs, -v/--volume, -e/--env and -w/--workdir set up the container backend, not {} (use --backend container)",
            backend.name()
        );
    }
    if let vbench_backends::Availability::Unavailable(why) = backend.availability() {
        bail!("backend {} is unavailable: {why}", backend.name());
    }
    let (prog, args) = a.program.split_first().expect("clap requires a program");
    let cancel = install_cancel()?;
    let inv = Invocation {
        program: match &cfg.container.rootfs {
            // the program as the root directory has it, as `docker run IMAGE PROGRAM` does
            Rootfs::Dir(d) if backend.name() == "container" && Path::new(prog).is_absolute() => {
                let inside = d.join(Path::new(prog).strip_prefix("/").unwrap_or(Path::new(prog)));
                user_program(&if inside.is_file() {
                    inside.into()
                } else {
                    prog.clone()
                })?
            }
            _ => user_program(prog)?,
        },
        args: args.to_vec(),
        timeout: a.timeout.map(Duration::from_secs_f64),
        stdio: Stdio::Inherit,
        cpu: a.pin,
        cancel: Some(cancel),
        chatty: false,
        abi: a.abi.unwrap_or(AbiPolicy::Host),
    };
    let out = backend.run(&inv)?;
    let s = &out.sample;
    // vbench's lines after the run: the guest may have left the shared stderr non-blocking
    if a.stats {
        let line = format!(
            "vbench: {} on {}: {}, wall {}, user {}, sys {}, max rss {}\n",
            inv.program.name(),
            backend.name(),
            s.exit,
            vbench_reports::fmt_ns(s.wall_ns as f64),
            vbench_reports::fmt_ns(s.user_ns as f64),
            vbench_reports::fmt_ns(s.sys_ns as f64),
            s.max_rss_kib
                .map_or("not measured".to_string(), |k| format!("{k} KiB"))
        );
        vbench_backends::session::write_stderr(line.as_bytes());
    }
    Ok(ExitCode::from(match s.exit {
        Exit::Code { code } => code as u8,
        Exit::Signal { signal } => {
            let line = format!("vbench: {} was {}\n", inv.program.name(), s.exit);
            vbench_backends::session::write_stderr(line.as_bytes());
            (128 + signal) as u8
        }
        Exit::Timeout { .. } => {
            let line = format!("vbench: {} {}\n", inv.program.name(), s.exit);
            vbench_backends::session::write_stderr(line.as_bytes());
            124
        }
        Exit::Interrupted => crate::cmd::common::interrupted_exit(),
    }))
}
