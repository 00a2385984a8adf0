//! The 8 flips/rotations of the square (the dihedral group D4) on tensors, for test-time
//! augmentation. (Training augmentation flips and turns raw buffers on loader threads; its tests
//! check those against the same `flip`/`rot90` ops used here.)

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Element `k` of D4 acting on the last two dims: rotate by `k % 4` quarter turns
/// (counter-clockwise, `torch.rot90` convention), then flip horizontally when `k >= 4`.
/// Files name elements ([`Dihedral::name`]) rather than number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub struct Dihedral(pub u8);

const NAMES: [&str; 8] =
    ["id", "rot90", "rot180", "rot270", "hflip", "antitranspose", "vflip", "transpose"];

impl Dihedral {
    pub const ALL: [Dihedral; 8] = [
        Dihedral(0),
        Dihedral(1),
        Dihedral(2),
        Dihedral(3),
        Dihedral(4),
        Dihedral(5),
        Dihedral(6),
        Dihedral(7),
    ];
    pub const IDENTITY: Dihedral = Dihedral(0);
    /// A quarter turn counter-clockwise.
    pub const ROT90: Dihedral = Dihedral(1);
    /// Also hflip followed by vflip.
    pub const ROT180: Dihedral = Dihedral(2);
    /// Mirror left-right (`flip(-1)`).
    pub const HFLIP: Dihedral = Dihedral(4);
    /// Mirror top-bottom (`flip(-2)`): a half turn, then hflip.
    pub const VFLIP: Dihedral = Dihedral(6);

    pub fn is_identity(self) -> bool {
        self.0 == 0
    }

    /// Whether the transform swaps height and width.
    pub fn swaps_axes(self) -> bool {
        self.0 % 2 == 1
    }

    /// "id", "rot90", "rot180", "rot270", "hflip", "antitranspose", "vflip", "transpose".
    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0 % 8)]
    }

    pub fn from_name(name: &str) -> Option<Dihedral> {
        NAMES.iter().position(|n| *n == name).map(|i| Dihedral(i as u8))
    }

    /// The element that applies `b`, then `self`. With r a quarter turn and s the hflip,
    /// element k is s^(k>=4) r^(k%4), and r s = s r^-1 moves `self`'s turns past `b`'s flip.
    pub fn after(self, b: Dihedral) -> Dihedral {
        let (ka, fa) = (self.0 % 4, self.0 >= 4);
        let (kb, fb) = (b.0 % 4, b.0 >= 4);
        let ka = if fb { (4 - ka) % 4 } else { ka };
        Dihedral((ka + kb) % 4 + if fa != fb { 4 } else { 0 })
    }

    /// The subgroup the `generators` generate, sorted (always contains the identity).
    pub fn group(generators: &[Dihedral]) -> Vec<Dihedral> {
        let mut set = vec![Dihedral::IDENTITY];
        let mut i = 0;
        while i < set.len() {
            for &g in generators {
                let e = g.after(set[i]);
                if !set.contains(&e) {
                    set.push(e);
                }
            }
            i += 1;
        }
        set.sort();
        set
    }

    pub fn apply(self, x: &Tensor) -> Tensor {
        let k = i64::from(self.0 % 4);
        let r = if k == 0 { x.shallow_clone() } else { x.rot90(k, [-2, -1]) };
        if self.0 >= 4 {
            r.flip([-1])
        } else {
            r
        }
    }

    pub fn invert(self, y: &Tensor) -> Tensor {
        let k = i64::from(self.0 % 4);
        let f = if self.0 >= 4 { y.flip([-1]) } else { y.shallow_clone() };
        if k == 0 {
            f
        } else {
            f.rot90(4 - k, [-2, -1])
        }
    }
}

impl std::fmt::Display for Dihedral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Dihedral> for &'static str {
    fn from(d: Dihedral) -> Self {
        d.name()
    }
}

impl TryFrom<String> for Dihedral {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Dihedral::from_name(&s)
            .ok_or_else(|| format!("unknown view {s:?}; expected one of {}", NAMES.join(", ")))
    }
}

/// "id, hflip" (for messages).
pub fn view_list(views: &[Dihedral]) -> String {
    views.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn x() -> Tensor {
        Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5])
    }

    #[test]
    fn every_element_is_inverted_exactly_and_all_eight_differ() {
        let x = x();
        let mut seen: Vec<Tensor> = Vec::new();
        for d in Dihedral::ALL {
            let y = d.apply(&x);
            assert_eq!(y.size()[2] == 5, d.swaps_axes());
            assert!(d.invert(&y).equal(&x), "{d:?}");
            assert!(
                seen.iter().all(|s| s.size() != y.size() || !s.equal(&y)),
                "{d:?} duplicates another"
            );
            seen.push(y);
        }
    }

    #[test]
    fn names_say_what_the_ops_do() {
        let x = x();
        assert!(Dihedral::HFLIP.apply(&x).equal(&x.flip([-1])));
        assert!(Dihedral::VFLIP.apply(&x).equal(&x.flip([-2])));
        assert!(Dihedral::ROT180.apply(&x).equal(&x.flip([-1]).flip([-2])));
        assert!(Dihedral::ROT90.apply(&x).equal(&x.rot90(1, [-2, -1])));
        assert!(Dihedral::from_name("transpose").unwrap().apply(&x).equal(&x.transpose(-2, -1)));
        for d in Dihedral::ALL {
            assert_eq!(Dihedral::from_name(d.name()), Some(d));
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Dihedral>(&json).unwrap(), d);
        }
        assert!(serde_json::from_str::<Dihedral>("\"flop\"").is_err());
    }

    #[test]
    fn composition_matches_applying_in_turn() {
        let x = x();
        for a in Dihedral::ALL {
            for b in Dihedral::ALL {
                assert!(a.after(b).apply(&x).equal(&a.apply(&b.apply(&x))), "{a} after {b}");
            }
        }
        let d = |n: &str| Dihedral::from_name(n).unwrap();
        assert_eq!(Dihedral::group(&[]), [d("id")]);
        assert_eq!(Dihedral::group(&[Dihedral::HFLIP, Dihedral::VFLIP]).len(), 4);
        assert_eq!(
            Dihedral::group(&[Dihedral::ROT90]),
            [d("id"), d("rot90"), d("rot180"), d("rot270")]
        );
        assert_eq!(Dihedral::group(&[Dihedral::ROT90, Dihedral::VFLIP]), Dihedral::ALL);
    }
}
