//! The 8 flips/rotations of the square (the dihedral group D4) on tensors, for test-time
//! augmentation. (Training augmentation flips and turns raw buffers on loader threads; its tests
//! check those against the same `flip`/`rot90` ops used here.)

use tch::Tensor;

/// Element `k` of D4 acting on the last two dims: rotate by `k % 4` quarter turns
/// (counter-clockwise, `torch.rot90` convention), then flip horizontally when `k >= 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral(pub u8);

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

    pub fn is_identity(self) -> bool {
        self.0 == 0
    }

    /// Whether the transform swaps height and width.
    pub fn swaps_axes(self) -> bool {
        self.0 % 2 == 1
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn every_element_is_inverted_exactly_and_all_eight_differ() {
        let x = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 5]);
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
}
