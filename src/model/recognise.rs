//! Which architecture an official state_dict holds: the arch whose network, with the config read
//! off the shapes, has exactly the file's keys and shapes.

use super::{Arch, ModelConfig, Network};
use std::collections::BTreeMap;
use tch::{nn, Device};

/// How far a file is from one arch's network.
struct Fit {
    arch: Arch,
    /// The config read off the shapes, or why none could be.
    config: Result<ModelConfig, String>,
    /// The arch's keys the file lacks or holds with another shape.
    missing: Vec<String>,
    /// The file's keys the arch does not have.
    unexpected: Vec<String>,
}

impl Fit {
    fn of(arch: Arch, shapes: &BTreeMap<String, Vec<i64>>) -> Fit {
        let config = ModelConfig::from_shapes(arch, shapes);
        let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
        if let Ok(cfg) = &config {
            let mut expected = expected_shapes(cfg);
            for (k, s) in shapes {
                match expected.remove(k) {
                    Some(e) if &e == s => {}
                    Some(_) => missing.push(format!("{k} (shape)")),
                    None if cfg.unused_upstream_keys().contains(&k.as_str()) => {}
                    None => unexpected.push(k.clone()),
                }
            }
            missing.extend(expected.into_keys());
        }
        Fit { arch, config, missing, unexpected }
    }

    fn exact(&self) -> bool {
        self.config.is_ok() && self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// Keys in common with the file, for ranking the near misses.
    fn shared(&self, held: usize) -> usize {
        if self.config.is_ok() {
            held - self.unexpected.len()
        } else {
            0
        }
    }

    fn describe(&self) -> String {
        let few = |keys: &[String]| {
            let mut s = keys.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if keys.len() > 3 {
                s += &format!(" and {} more", keys.len() - 3);
            }
            s
        };
        match &self.config {
            Err(e) => format!("{}: {e}", self.arch.name()),
            Ok(_) => {
                let mut parts = Vec::new();
                if !self.missing.is_empty() {
                    parts.push(format!("missing {}", few(&self.missing)));
                }
                if !self.unexpected.is_empty() {
                    parts.push(format!("unexpected {}", few(&self.unexpected)));
                }
                format!("{}: {}", self.arch.name(), parts.join("; "))
            }
        }
    }
}

/// Keys and shapes of the network `cfg` builds.
fn expected_shapes(cfg: &ModelConfig) -> BTreeMap<String, Vec<i64>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = tch::no_grad(|| Network::new(&vs.root(), cfg));
    vs.variables().into_iter().map(|(k, t)| (k, t.size())).collect()
}

/// The config of an official state_dict: of `forced` when given (keys are then checked on
/// loading, as for any file), else of the one arch that fits the keys and shapes exactly. When
/// none does, the error names the closest arch first, with what it lacks and what it does not
/// know.
pub fn recognise(
    shapes: &BTreeMap<String, Vec<i64>>,
    forced: Option<Arch>,
) -> Result<ModelConfig, String> {
    if let Some(arch) = forced {
        return ModelConfig::from_shapes(arch, shapes)
            .map_err(|e| format!("{e}; is this a {} checkpoint?", arch.label()));
    }
    let mut fits: Vec<Fit> = Arch::ALL.into_iter().map(|a| Fit::of(a, shapes)).collect();
    if let Some(i) = fits.iter().position(Fit::exact) {
        return fits.swap_remove(i).config;
    }
    fits.sort_by_key(|f| std::cmp::Reverse(f.shared(shapes.len())));
    let closest = fits.iter().map(Fit::describe).collect::<Vec<_>>().join(" | ");
    Err(format!("its {} keys match no architecture (closest first: {closest})", shapes.len()))
}
