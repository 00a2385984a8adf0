//! `loss:` in an experiment: one weight per term of [`TERMS`] (by its key) and the perceptual
//! term's options. Read and written by hand rather than derived, so the keys come from the
//! term table alone; unknown keys are rejected as everywhere else in the config.

use super::terms::{term, Term, TERMS};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The perceptual term's distance between feature maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    L1,
    L2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LossConfig {
    /// Each term's weight, in [`TERMS`] order (0: off).
    weights: Vec<f64>,
    /// torchvision `features.N` indices whose outputs are compared (relu1_2, relu2_2, relu3_3).
    pub perceptual_layers: Vec<usize>,
    pub perceptual_distance: Distance,
    /// ImageNet VGG16 weights (`scripts/export_vgg16.py` writes them).
    pub vgg_weights: PathBuf,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            weights: TERMS.iter().map(|t| t.default).collect(),
            perceptual_layers: vec![3, 8, 15],
            perceptual_distance: Distance::L1,
            vgg_weights: PathBuf::from("weights/vgg16.safetensors"),
        }
    }
}

fn index(key: &str) -> usize {
    TERMS.iter().position(|t| t.key == key).unwrap_or_else(|| panic!("no loss term {key:?}"))
}

impl LossConfig {
    /// The weight of the term `key` (a key that names no term is a bug: it panics).
    pub fn weight(&self, key: &str) -> f64 {
        self.weights[index(key)]
    }

    pub fn set_weight(&mut self, key: &str, weight: f64) {
        self.weights[index(key)] = weight;
    }

    /// This config with the term `key` weighted `weight`.
    pub fn with(mut self, key: &str, weight: f64) -> Self {
        self.set_weight(key, weight);
        self
    }

    /// Only the given terms, with their weights (every other term off).
    pub fn only(terms: &[(&str, f64)]) -> Self {
        let mut c = LossConfig { weights: vec![0.0; TERMS.len()], ..LossConfig::default() };
        for (k, w) in terms {
            c.set_weight(k, *w);
        }
        c
    }

    /// Every term with its weight, in [`TERMS`] order.
    pub fn terms(&self) -> impl Iterator<Item = (&'static Term, f64)> + '_ {
        TERMS.iter().zip(self.weights.iter().copied())
    }
}

const OPTIONS: [&str; 3] = ["perceptual_layers", "perceptual_distance", "vgg_weights"];

/// Every key `loss:` accepts (for serde's "expected one of" message).
fn fields() -> &'static [&'static str] {
    static FIELDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| TERMS.iter().map(|t| t.key).chain(OPTIONS).collect())
}

impl Serialize for LossConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(TERMS.len() + OPTIONS.len()))?;
        for (t, w) in self.terms() {
            m.serialize_entry(t.key, &w)?;
        }
        m.serialize_entry("perceptual_layers", &self.perceptual_layers)?;
        m.serialize_entry("perceptual_distance", &self.perceptual_distance)?;
        m.serialize_entry("vgg_weights", &self.vgg_weights)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for LossConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(LossVisitor)
    }
}

struct LossVisitor;

impl<'de> Visitor<'de> for LossVisitor {
    type Value = LossConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of loss term weights and perceptual options")
    }

    /// Keys not given keep their defaults, as `#[serde(default)]` does elsewhere.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LossConfig, A::Error> {
        let mut cfg = LossConfig::default();
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            match key.as_str() {
                "perceptual_layers" => cfg.perceptual_layers = map.next_value()?,
                "perceptual_distance" => cfg.perceptual_distance = map.next_value()?,
                "vgg_weights" => cfg.vgg_weights = map.next_value()?,
                k if term(k).is_some() => cfg.set_weight(k, map.next_value()?),
                k => return Err(de::Error::unknown_field(k, fields())),
            }
            seen.push(key);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_unknown_ones_are_refused() {
        let c = LossConfig::default().with("ssim", 0.2).with("fft", 0.05);
        let yaml = serde_yaml::to_string(&c).unwrap();
        assert!(yaml.starts_with("l1: 1.0\nssim: 0.2\nperceptual: 0.0\n"), "{yaml}");
        assert_eq!(serde_yaml::from_str::<LossConfig>(&yaml).unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<LossConfig>(&json).unwrap(), c);
        // Unset keys keep their defaults; integers are weights too.
        let c: LossConfig = serde_yaml::from_str("ssim: 1\nperceptual_distance: l2\n").unwrap();
        assert_eq!((c.weight("l1"), c.weight("ssim")), (1.0, 1.0));
        assert_eq!(c.perceptual_distance, Distance::L2);
        let e = serde_yaml::from_str::<LossConfig>("sim: 0.2\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `sim`, expected one of `l1`, `ssim`"), "{e}");
        let e = serde_yaml::from_str::<LossConfig>("l1: a\n").unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = serde_json::from_str::<LossConfig>(r#"{"l1": 1, "l1": 2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `l1`"), "{e}");
        let only = LossConfig::only(&[("edge", 0.5)]);
        assert_eq!(only.terms().filter(|(_, w)| *w > 0.0).count(), 1);
    }
}
