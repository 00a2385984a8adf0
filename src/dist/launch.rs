//! How this process was started ([`Launch`]) and how long the ranks wait for each other.

use crate::{Error, Result};
use std::time::Duration;

/// How this process was started: torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `MASTER_ADDR`, `MASTER_PORT`), which a Slurm job script sets the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// The rank on this machine: the GPU it uses (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent serves the rendezvous store (`TORCHELASTIC_USE_AGENT_STORE=True`);
    /// otherwise rank 0 serves it.
    pub agent_store: bool,
}

impl Launch {
    /// Rank `rank` of `world` processes on this machine, rank 0 serving the store on `port`.
    pub fn local(rank: usize, world: usize, port: u16) -> Launch {
        Launch {
            rank,
            world,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
        }
    }

    /// `None` when `WORLD_SIZE` is not set: one process, as without torchrun.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let Some(world) = var("WORLD_SIZE") else {
            return match var("RANK") {
                Some(_) => Err(Error::Usage(
                    "RANK is set but WORLD_SIZE is not: launch with torchrun --nproc-per-node N, or set both (and MASTER_ADDR)".into(),
                )),
                None => Ok(None),
            };
        };
        let int = |name: &str, v: &str| {
            v.trim().parse::<usize>().map_err(|_| {
                Error::Usage(format!("{name}={v:?} is not a whole number (torchrun sets it)"))
            })
        };
        let world = int("WORLD_SIZE", &world)?;
        if world == 0 {
            return Err(Error::Usage("WORLD_SIZE=0: there must be at least one process".into()));
        }
        let rank = int("RANK", &var("RANK").unwrap_or_else(|| "0".into()))?;
        if rank >= world {
            return Err(Error::Usage(format!(
                "RANK={rank} with WORLD_SIZE={world}: ranks go from 0 to {}",
                world - 1
            )));
        }
        let master_addr = var("MASTER_ADDR").filter(|a| !a.trim().is_empty()).ok_or_else(|| {
            Error::Usage(format!(
                "WORLD_SIZE={world} but MASTER_ADDR is not set: launch with torchrun --nproc-per-node N (it sets both), or set MASTER_ADDR and MASTER_PORT"
            ))
        })?;
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port = port.trim().parse::<u16>().map_err(|_| {
            Error::Usage(format!("MASTER_PORT={port:?} is not a port number (1-65535)"))
        })?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => int("LOCAL_RANK", &v)?,
            None => rank,
        };
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        Ok(Some(Launch { rank, world, local_rank, master_addr, master_port, agent_store }))
    }
}

/// How long a collective or the rendezvous may wait for the other ranks before failing
/// (`PROMPTIR_DIST_TIMEOUT` seconds, default 600): long enough for a slow validation or save on
/// one rank; a rank that dies is noticed at once through its closed connections.
pub fn timeout() -> Duration {
    let secs = std::env::var("PROMPTIR_DIST_TIMEOUT").ok().and_then(|s| s.parse::<u64>().ok());
    Duration::from_secs(secs.unwrap_or(600).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn launches_read_torchrun_s_variables_and_refuse_bad_ones() {
        assert_eq!(launch(&[]).unwrap(), None);
        let l = launch(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.rank, l.world, l.local_rank, l.master_port, l.agent_store),
            (3, 4, 1, 29500, false)
        );
        let l = launch(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "12345"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.master_port, l.agent_store, l.local_rank), (12345, true, 0));
        for (vars, needle) in [
            (&[("WORLD_SIZE", "2"), ("RANK", "0")][..], "MASTER_ADDR is not set"),
            (
                &[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")][..],
                "RANK=2 with WORLD_SIZE=2",
            ),
            (&[("RANK", "1")][..], "WORLD_SIZE is not"),
            (&[("WORLD_SIZE", "two")][..], "WORLD_SIZE=\"two\""),
            (
                &[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")][..],
                "MASTER_PORT",
            ),
        ] {
            let e = launch(vars).unwrap_err().to_string();
            assert!(e.contains(needle), "{vars:?}: {e}");
        }
    }
}
