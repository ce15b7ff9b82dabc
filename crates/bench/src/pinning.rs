//! CPU pinning with `taskset`: the server (Unhidra or Mosquitto) on one CPU, the load generator
//! (this process) on another, so that on a small machine each gets one core's share and
//! neither can take the other's.
//!
//! The server is started through `taskset -c <cpu> <program> …`, which execs the program, so
//! the pid the benchmark reads `/proc` for is the server's. This process pins every thread it
//! has with `taskset -a -p -c <cpu> <pid>`; threads started later inherit their creator's CPU.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::Command;

use crate::target::cpus;

/// Which CPU the server and the load generator run on, if pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// Both run wherever the scheduler puts them.
    Off,
    /// The server on `server`, the load generator on `load`.
    Cpus { server: usize, load: usize },
}

impl Pin {
    /// CPU 0 for the server and CPU 1 for the load generator, when there are two CPUs or more.
    pub fn default_pair() -> Self {
        if cpus() >= 2 {
            Self::Cpus { server: 0, load: 1 }
        } else {
            Self::Off
        }
    }

    /// The server's CPU, if pinned.
    pub fn server(self) -> Option<usize> {
        match self {
            Self::Off => None,
            Self::Cpus { server, .. } => Some(server),
        }
    }

    /// Pins every thread of this process (the load generator) to its CPU; nothing when off.
    pub fn pin_load_generator(self) -> anyhow::Result<()> {
        let Self::Cpus { load, .. } = self else {
            return Ok(());
        };
        let status = std::process::Command::new("taskset")
            .args([
                "-a",
                "-p",
                "-c",
                &load.to_string(),
                &std::process::id().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running taskset to pin the load generator (is util-linux installed?)")?;
        if !status.success() {
            bail!("taskset could not pin the load generator to CPU {load}");
        }
        Ok(())
    }
}

/// `program`, run through `taskset -c <cpu>` when `cpu` is given.
pub fn command(program: &std::path::Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl FromStr for Pin {
    type Err = String;

    /// `off`, or `SERVER,LOAD` (two different CPU numbers).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Self::Off);
        }
        let parsed = s.split_once(',').and_then(|(server, load)| {
            Some((server.trim().parse().ok()?, load.trim().parse().ok()?))
        });
        match parsed {
            Some((server, load)) if server != load => Ok(Self::Cpus { server, load }),
            Some(_) => Err(format!(
                "`{s}`: the server and the load generator need two CPUs"
            )),
            None => Err(format!("`{s}` is neither `off` nor SERVER,LOAD (e.g. 0,1)")),
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("not pinned"),
            Self::Cpus { server, load } => write!(
                f,
                "server pinned to CPU {server}, load generator to CPU {load} (taskset)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        assert_eq!("off".parse::<Pin>(), Ok(Pin::Off));
        assert_eq!("0,1".parse::<Pin>(), Ok(Pin::Cpus { server: 0, load: 1 }));
        assert_eq!("3, 2".parse::<Pin>(), Ok(Pin::Cpus { server: 3, load: 2 }));
        assert!("1,1".parse::<Pin>().is_err());
        assert!("1".parse::<Pin>().is_err());
        assert!("a,b".parse::<Pin>().is_err());
    }
}
