//! PGM: the prompt generation block, PromptIR's addition to Restormer.

use crate::model::{conv, is_channels_last, to_channels_last, TORCH_DEFAULT_INIT};
use tch::{nn, nn::Module, Tensor};

/// Mixes `prompt_len` learned prompt components with weights predicted from the input features,
/// resizes the mix to the feature size and refines it with a 3x3 conv.
#[derive(Debug)]
pub struct PromptGenBlock {
    /// (1, L, P, S, S), initialised U[0, 1) like `torch.rand`.
    pub prompt_param: Tensor,
    pub linear_layer: nn::Linear,
    pub conv3x3: nn::Conv2D,
    prompt_len: i64,
    prompt_dim: i64,
    prompt_size: i64,
}

impl PromptGenBlock {
    pub fn new(
        p: nn::Path,
        prompt_dim: i64,
        prompt_len: i64,
        prompt_size: i64,
        lin_dim: i64,
    ) -> Self {
        let shape = [1, prompt_len, prompt_dim, prompt_size, prompt_size];
        let lin = nn::LinearConfig { ws_init: TORCH_DEFAULT_INIT, ..Default::default() };
        PromptGenBlock {
            prompt_param: p.var("prompt_param", &shape, nn::Init::Uniform { lo: 0.0, up: 1.0 }),
            linear_layer: nn::linear(&p / "linear_layer", lin_dim, prompt_len, lin),
            conv3x3: conv(&p / "conv3x3", prompt_dim, prompt_dim, 3, 1, false),
            prompt_len,
            prompt_dim,
            prompt_size,
        }
    }
}

impl Module for PromptGenBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, _, h, w) = x.size4().expect("PromptGenBlock expects a 4-D input");
        let (l, p, s) = (self.prompt_len, self.prompt_dim, self.prompt_size);
        let emb = x.mean_dim([-2i64, -1].as_slice(), false, None);
        let weights = self.linear_layer.forward(&emb).softmax(1, None); // (B, L)
                                                                        // Upstream repeats the prompts over the batch and sums; a weighted sum is one matmul.
        let prompt = weights.matmul(&self.prompt_param.view([l, p * s * s])).view([b, p, s, s]);
        // F.interpolate(mode="bilinear"), align_corners=False; an exact identity when sizes match.
        let prompt = if (h, w) == (s, s) {
            prompt
        } else {
            prompt.upsample_bilinear2d([h, w], false, None, None)
        };
        // Same layout as the features it is concatenated with: cat of mixed layouts is NCHW.
        let prompt = if is_channels_last(x) { to_channels_last(&prompt) } else { prompt };
        self.conv3x3.forward(&prompt)
    }
}
