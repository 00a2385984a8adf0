//! The activations' memory layout, and the 1x1 conv that takes a matrix-product path on it.

use tch::Tensor;

/// Memory layout of the activations inside the network; the values are the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// Channels-last on CPU, the input's own layout (NCHW) elsewhere.
    #[default]
    Auto,
    /// NHWC strides: oneDNN runs 1x1 and depthwise convs on them without reordering to and
    /// from its blocked format, and LayerNorm over channels reads contiguous rows.
    #[value(alias = "nhwc")]
    ChannelsLast,
    /// Whatever layout the input has (NCHW for a plain tensor), as upstream.
    #[value(alias = "nchw")]
    Contiguous,
}

impl Layout {
    /// Whether a forward on `device` runs channels-last.
    pub fn channels_last_on(self, device: tch::Device) -> bool {
        match self {
            Layout::Auto => device == tch::Device::Cpu,
            Layout::ChannelsLast => true,
            Layout::Contiguous => false,
        }
    }
}

/// True when a 4-D tensor has channels-last (NHWC) strides. Only picks a fast path: every
/// caller is correct for any strides.
pub(crate) fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    size.len() == 4 && stride[1] == 1 && stride[3] == size[1] && size[1] > 1
}

/// The same values with channels-last strides (a no-op if it already has them).
pub fn to_channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Pixel rows (batch x height x width) up to which a channels-last 1x1 conv on the CPU runs as
/// one matrix product: below it oneDNN's 1x1 conv is slower (timings in docs/perf-notes.md).
const POINTWISE_MATMUL_MAX_ROWS: i64 = 1024;

/// Whether [`pointwise`] takes the matrix product for this input.
fn pointwise_as_matmul(x: &Tensor) -> bool {
    let (b, _, h, w) = x.size4().expect("a 1x1 conv takes a 4-D input");
    x.device() == tch::Device::Cpu && is_channels_last(x) && b * h * w <= POINTWISE_MATMUL_MAX_ROWS
}

/// A 1x1 conv (`weight` (out, in, 1, 1)). Small channels-last maps on the CPU (the low-resolution
/// levels, and every level of a small training patch) go through `addmm` on the (rows, in) view
/// of the input; the values are the same conv, up to float rounding.
pub(crate) fn pointwise(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    if !pointwise_as_matmul(x) {
        return x.conv2d(weight, bias, [1, 1], [0, 0], [1, 1], 1);
    }
    let (b, cin, h, w) = x.size4().expect("a 1x1 conv takes a 4-D input");
    let rows = b * h * w;
    let cout = weight.size()[0];
    let xm = x.permute([0, 2, 3, 1]).reshape([rows, cin]);
    let wt = weight.view([cout, cin]).transpose(0, 1);
    let y = match bias {
        Some(bias) => bias.addmm(&xm, &wt),
        None => xm.mm(&wt),
    };
    y.view([b, h, w, cout]).permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The matrix-product path against libtorch's conv: values and all three gradients.
    #[test]
    fn pointwise_as_a_matrix_product_is_the_conv() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let x = to_channels_last(&Tensor::randn([2, 24, 8, 8], opts)).set_requires_grad(true);
        let w = Tensor::randn([40, 24, 1, 1], opts).set_requires_grad(true);
        let b = Tensor::randn([40], opts).set_requires_grad(true);
        let probe = Tensor::randn([2, 40, 8, 8], opts);
        let grads = |y: Tensor| {
            assert!(is_channels_last(&y), "keeps the layout");
            let g = Tensor::run_backward(
                &[(&y * &probe).sum(Kind::Float)],
                &[&x, &w, &b],
                false,
                false,
            );
            (y.detach(), g)
        };
        assert!(pointwise_as_matmul(&x));
        let (y, g) = grads(pointwise(&x, &w, Some(&b)));
        let (y_ref, g_ref) = grads(x.conv2d(&w, Some(&b), [1, 1], [0, 0], [1, 1], 1));
        let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-4;
        assert!(close(&y, &y_ref));
        for (a, b) in g.iter().zip(&g_ref) {
            assert!(close(a, b), "gradient differs");
        }
        // Bias-free, and an NCHW input takes the conv itself.
        let y = pointwise(&x, &w, None);
        assert!(close(&y, &x.conv2d(&w, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)));
        let nchw = x.contiguous();
        assert!(!pointwise_as_matmul(&nchw));
        assert!(close(&pointwise(&nchw, &w, Some(&b)), &y_ref));
        // Past the row limit (2 x 32 x 32 = 2,048 rows) the conv itself runs.
        let large = to_channels_last(&Tensor::randn([2, 24, 32, 32], opts));
        assert!(!pointwise_as_matmul(&large));
    }
}
