//! Reliability: a typo, a bad file or a killed process must cost minutes, never the run.

mod bad_inputs; // a table of user errors: exit 2, one line naming the file or key, nothing written
mod fixture; // the shared inputs the table's rows start from
mod kill_9; // kill -9 during saves and training: the last checkpoint loads, a resume is exact
mod properties; // random YAML, --set, checkpoint bytes and metadata: Ok or Err, never a panic
mod rows; // the table's rows
mod run_names; // an existing run name without --resume makes a new run
