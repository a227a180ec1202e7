//! Scaled dot-product attention, `softmax(scale·Q Kᵀ + mask) V` with optional dropout on the
//! attention weights, as one custom Burn operation: the models' self-, causal and
//! cross-attention all go through [`attention`].
//!
//! Why: Burn's `module::attention` under autodiff is a composition (scores materialised, softmax
//! and masking as single-threaded elementwise ops, every intermediate kept for the backward),
//! and on the 2-core benchmark machine attention was a large share of a GPT step
//! (bench/README.md). The flex kernel here works per (batch, head) in parallel over the CPU
//! pool, in blocks of query rows: the block's scores are a GEMM, the softmax keeps the row's
//! log-sum-exp, and the output is a second GEMM. It saves only the output and that log-sum-exp;
//! the backward recomputes the probabilities from them (as FlashAttention does). Dropout masks
//! are a counter-based hash of (seed, batch, head, query, key), so the backward regenerates the
//! forward's mask instead of storing it.
//!
//! Every other backend (and flex for dtypes other than f32) runs Burn's composition, so results
//! agree across backends to f32 rounding; with dropout they draw a different (equally
//! distributed) mask.

// NdArray is deprecated by Burn but stays selectable (src/backend.rs); the extension names it.
#![allow(deprecated)]
// The operation's scalars travel as plain arguments through Burn's extension dispatch.
#![allow(clippy::too_many_arguments)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::nn::Dropout;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Distribution, Int, Tensor, TensorData};

/// Which keys a query may see.
// Built per call and moved into `attention`, never stored: boxing the tensor buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Mask {
    /// Every key.
    None,
    /// Causal, aligned to the bottom right: query `i` of `tq` sees keys `j <= i + tk - tq`, so
    /// new queries after a key/value cache see every cached key and the earlier new ones.
    Causal,
    /// `[batch, tk]`, true at padded keys, which no query sees.
    KeyPadding(Tensor<2, Bool>),
}

/// Attention of `q` `[batch, heads, tq, d]` over `k` `[batch, heads, tk, d]` and `v`
/// `[batch, heads, tk, dv]`, giving `[batch, heads, tq, dv]`. `scale` defaults to `1/√d`;
/// `dropout` is the probability of dropping an attention weight (0 outside training: see
/// [`dropout_rate`]). A query that sees no key gets zeros from the flex kernel.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Mask,
    scale: Option<f64>,
    dropout: f64,
) -> Tensor<4> {
    let head_dim = q.dims()[3];
    let scale = scale.unwrap_or(1.0 / (head_dim as f64).sqrt());
    let seed = if dropout > 0.0 {
        dropout_seed(&q.device())
    } else {
        0
    };
    attention_seeded(q, k, v, mask, scale, dropout, seed)
}

/// [`attention`] with the dropout seed given.
fn attention_seeded(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Mask,
    scale: f64,
    dropout: f64,
    seed: u64,
) -> Tensor<4> {
    let (causal, padding) = mask.parts();
    let key_mask = key_mask(&padding, q.dims()[0], k.dims()[2], &q.device());
    let fused = <Dispatch as AttentionOps>::fused_attention(
        q.clone().into_dispatch(),
        k.clone().into_dispatch(),
        v.clone().into_dispatch(),
        key_mask.into_dispatch(),
        causal,
        scale,
        dropout,
        seed,
    );
    match fused {
        Some(output) => Tensor::from_dispatch(output),
        None => composition(q, k, v, causal, padding, scale, dropout),
    }
}

/// Self-attention over a packed projection `qkv` `[batch, time, 3·width]` laid out
/// `[q | k | v]` (the models' fused QKV linear layer), `heads` heads of `width / heads`: the
/// output `[batch, time, width]` with the heads merged, as
/// `attention` over `split_heads(qkv, heads)` followed by the merge gives it.
///
/// Why a second entry: on flex the kernel reads the heads in place and writes the gradient of
/// `qkv` as one tensor. Split into three views, autodiff's backward of each view is a zeroed
/// tensor of the projection's full size with the part's gradient copied in, and the three are
/// then summed. A key/value cache needs the split keys and values, so it takes [`attention`].
pub fn self_attention(qkv: Tensor<3>, heads: usize, mask: Mask, dropout: f64) -> Tensor<3> {
    let seed = if dropout > 0.0 {
        dropout_seed(&qkv.device())
    } else {
        0
    };
    packed_seeded(qkv, heads, mask, dropout, seed)
}

/// [`self_attention`] with the dropout seed given.
fn packed_seeded(qkv: Tensor<3>, heads: usize, mask: Mask, dropout: f64, seed: u64) -> Tensor<3> {
    let [batch, time, three_widths] = qkv.dims();
    let scale = 1.0 / ((three_widths / 3 / heads) as f64).sqrt();
    let (causal, padding) = mask.parts();
    let key_mask = key_mask(&padding, batch, time, &qkv.device());
    let fused = <Dispatch as AttentionOps>::fused_self_attention(
        qkv.clone().into_dispatch(),
        heads,
        key_mask.into_dispatch(),
        causal,
        scale,
        dropout,
        seed,
    );
    match fused {
        Some(output) => Tensor::from_dispatch(output),
        None => {
            let [q, k, v] = super::split_heads(qkv, heads);
            let y = composition(q, k, v, causal, padding, scale, dropout);
            y.swap_dims(1, 2).reshape([batch, time, three_widths / 3])
        }
    }
}

impl Mask {
    /// Whether the mask is causal, and the key padding if any.
    fn parts(self) -> (bool, Option<Tensor<2, Bool>>) {
        match self {
            Mask::None => (false, None),
            Mask::Causal => (true, None),
            Mask::KeyPadding(padding) => (false, Some(padding)),
        }
    }
}

/// The padding as the extensions take it: a tensor, all false when there is none.
fn key_mask(
    padding: &Option<Tensor<2, Bool>>,
    batch: usize,
    time_k: usize,
    device: &Device,
) -> Tensor<2, Bool> {
    padding.clone().unwrap_or_else(|| {
        let none = TensorData::new(vec![false; batch * time_k], [batch, time_k]);
        Tensor::from_data(none, device)
    })
}

/// The probability `dropout` applies now: its rate while it takes part in training (the same
/// test as `Dropout::forward`), else 0.
pub fn dropout_rate(dropout: &Dropout, device: &Device) -> f64 {
    if dropout.training.is_enabled() && device.is_autodiff() {
        dropout.prob
    } else {
        0.0
    }
}

/// A dropout seed from the backend's generator, which the training loop seeds per step (so a
/// resumed run drops what an uninterrupted one would). 48 bits from two uniform draws.
fn dropout_seed(device: &Device) -> u64 {
    let draws = Tensor::<1>::random([2], Distribution::Default, device).into_data();
    draws
        .iter::<f32>()
        .fold(0u64, |seed, x| (seed << 24) | (x * 16_777_216.0) as u64)
}

/// Burn's composition: what backends without the kernel run (autodiff differentiates it).
fn composition(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    causal: bool,
    padding: Option<Tensor<2, Bool>>,
    scale: f64,
    dropout: f64,
) -> Tensor<4> {
    let [batch, heads, time_q, _] = q.dims();
    let time_k = k.dims()[2];
    let shape = [batch, heads, time_q, time_k];
    let padding = padding.map(|p| p.reshape([batch, 1, 1, time_k]).expand(shape));
    if dropout == 0.0 {
        let options = AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: causal,
        };
        return burn_attention(q, k, v, padding, None, options);
    }
    let device = q.device();
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if causal {
        let rows = Tensor::<1, Int>::arange(0..time_q as i64, &device)
            .reshape([time_q, 1])
            .add_scalar(time_k as i64 - time_q as i64);
        let cols = Tensor::<1, Int>::arange(0..time_k as i64, &device).reshape([1, time_k]);
        let future = cols.greater(rows).reshape([1, 1, time_q, time_k]);
        scores = scores.mask_fill(future.expand(shape), f32::NEG_INFINITY);
    }
    if let Some(padding) = padding {
        scores = scores.mask_fill(padding, f32::NEG_INFINITY);
    }
    let weights = softmax(scores, 3);
    let keep = weights.random_like(Distribution::Bernoulli(1.0 - dropout));
    (weights * keep).div_scalar(1.0 - dropout).matmul(v)
}

/// The operation per backend. A backend with a kernel answers `Some`; the default `None` sends
/// [`attention`] to Burn's composition, which autodiff differentiates op by op.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait AttentionOps: Backend {
    /// The attention output; `padding` `[batch, tk]` is true at padded keys.
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<FloatTensor<Self>> {
        let _ = (q, k, v, padding, causal, scale, dropout, seed);
        None
    }

    /// The output and each query row's log-sum-exp of its scores `[batch, heads, tq]`: what
    /// the backward needs.
    fn fused_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<(FloatTensor<Self>, FloatTensor<Self>)> {
        let _ = (q, k, v, padding, causal, scale, dropout, seed);
        None
    }

    /// The gradients of q, k and v given the output's gradient `grad`, from what
    /// `fused_attention_forward` gave. A backend with that forward has this backward.
    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        output: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<(FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>)> {
        let _ = (q, k, v, output, lse, grad, padding);
        let _ = (causal, scale, dropout, seed);
        None
    }

    /// [`self_attention`]'s output `[batch, time, width]` from the packed `qkv`.
    fn fused_self_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<FloatTensor<Self>> {
        let _ = (qkv, heads, padding, causal, scale, dropout, seed);
        None
    }

    /// The output and the log-sum-exp `[batch, heads, time]`, as `fused_attention_forward`.
    fn fused_self_attention_forward(
        qkv: FloatTensor<Self>,
        heads: usize,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<(FloatTensor<Self>, FloatTensor<Self>)> {
        let _ = (qkv, heads, padding, causal, scale, dropout, seed);
        None
    }

    /// The gradient of `qkv` `[batch, time, 3·width]`, as `fused_attention_backward`.
    fn fused_self_attention_backward(
        qkv: FloatTensor<Self>,
        output: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<FloatTensor<Self>> {
        let _ = (qkv, output, lse, grad, heads, padding);
        let _ = (causal, scale, dropout, seed);
        None
    }
}

#[cfg(feature = "ndarray")]
impl AttentionOps for burn::backend::NdArray {}
#[cfg(feature = "tch")]
impl AttentionOps for burn::backend::LibTorch {}
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl AttentionOps for burn::backend::Cube {}

/// What the backward recomputes from.
#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    output: FloatTensor<B>,
    lse: FloatTensor<B>,
    padding: BoolTensor<B>,
    causal: bool,
    scale: f64,
    dropout: f64,
    seed: u64,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: AttentionOps> Backward<B, 3> for AttentionBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent_q, parent_k, parent_v] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dq, dk, dv) = B::fused_attention_backward(
            s.q, s.k, s.v, s.output, s.lse, grad, s.padding, s.causal, s.scale, s.dropout, s.seed,
        )
        .expect("a backend with the fused attention's forward has its backward");
        for (parent, grad) in [(parent_q, dq), (parent_k, dk), (parent_v, dv)] {
            if let Some(parent) = parent {
                grads.register::<B>(parent.id, grad);
            }
        }
    }
}

impl<B: AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<FloatTensor<Self>> {
        let (inner_q, inner_k, inner_v) = (
            q.clone().into_primitive(),
            k.clone().into_primitive(),
            v.clone().into_primitive(),
        );
        let (output, lse) = B::fused_attention_forward(
            inner_q.clone(),
            inner_k.clone(),
            inner_v.clone(),
            padding.clone(),
            causal,
            scale,
            dropout,
            seed,
        )?;
        let prepared = AttentionBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful();
        Some(match prepared {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    q: inner_q,
                    k: inner_k,
                    v: inner_v,
                    output: output.clone(),
                    lse,
                    padding,
                    causal,
                    scale,
                    dropout,
                    seed,
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        })
    }

    fn fused_self_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        padding: BoolTensor<Self>,
        causal: bool,
        scale: f64,
        dropout: f64,
        seed: u64,
    ) -> Option<FloatTensor<Self>> {
        let inner = qkv.clone().into_primitive();
        let (output, lse) = B::fused_self_attention_forward(
            inner.clone(),
            heads,
            padding.clone(),
            causal,
            scale,
            dropout,
            seed,
        )?;
        let prepared = PackedAttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful();
        Some(match prepared {
            OpsKind::Tracked(prep) => {
                let saved = PackedSaved {
                    qkv: inner,
                    output: output.clone(),
                    lse,
                    heads,
                    padding,
                    causal,
                    scale,
                    dropout,
                    seed,
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        })
    }
}

/// What the packed self-attention's backward recomputes from.
#[derive(Debug, Clone)]
struct PackedSaved<B: Backend> {
    qkv: FloatTensor<B>,
    output: FloatTensor<B>,
    lse: FloatTensor<B>,
    heads: usize,
    padding: BoolTensor<B>,
    causal: bool,
    scale: f64,
    dropout: f64,
    seed: u64,
}

#[derive(Debug)]
struct PackedAttentionBackward;

impl<B: AttentionOps> Backward<B, 1> for PackedAttentionBackward {
    type State = PackedSaved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let dqkv = B::fused_self_attention_backward(
            s.qkv, s.output, s.lse, grad, s.heads, s.padding, s.causal, s.scale, s.dropout, s.seed,
        )
        .expect("a backend with the packed attention's forward has its backward");
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, dqkv);
        }
    }
}

#[cfg(feature = "flex")]
pub(crate) mod flex_kernel {
    use super::AttentionOps;
    use crate::models::gelu::flex_kernel::exp_nonpositive;
    use crate::models::vectorised::vectorised;
    use crate::rng::SplitMix64;
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::{BoolTensor, FloatTensor};
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;

    /// Query rows per block: the block's scores (`ROWS × tk` f32) stay in L2 for the sequence
    /// lengths the models use, and every product is a GEMM of at least this many rows.
    const ROWS: usize = 64;

    impl AttentionOps for Flex {
        fn fused_attention(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            padding: BoolTensor<Self>,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<FloatTensor<Self>> {
            Self::fused_attention_forward(q, k, v, padding, causal, scale, dropout, seed)
                .map(|(output, _)| output)
        }

        fn fused_attention_forward(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            padding: BoolTensor<Self>,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<(FloatTensor<Self>, FloatTensor<Self>)> {
            let (q, k, v) = (View::new(&q)?, View::new(&k)?, View::new(&v)?);
            let problem = Problem::new(&q, &k, &v, padding, causal, scale, dropout, seed)?;
            let (output, lse) = problem.forward(&q, &k, &v);
            // Time-major, returned as the `[batch, heads, tq, dv]` view: the models' merge of
            // the heads (swap, reshape) is then free.
            let (batch, heads, tq, dv) = (problem.batch, problem.heads, problem.tq, problem.dv);
            let output = TensorData::new(output, [batch, tq, heads, dv]);
            Some((FlexTensor::from_data(output).transpose(1, 2), lse))
        }

        fn fused_attention_backward(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            output: FloatTensor<Self>,
            lse: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            padding: BoolTensor<Self>,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<(FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>)> {
            let (q, k, v) = (View::new(&q)?, View::new(&k)?, View::new(&v)?);
            let (output, grad) = (View::new(&output)?, View::new(&grad)?);
            let problem = Problem::new(&q, &k, &v, padding, causal, scale, dropout, seed)?;
            let lse = crate::models::gelu::contiguous(&lse);
            let (batch, heads, tq, tk) = (problem.batch, problem.heads, problem.tq, problem.tk);
            // Time-major as the forward's output, and returned as views the same way.
            let mut buffers = [(tq, problem.d), (tk, problem.d), (tk, problem.dv)]
                .map(|(t, cols)| (vec![0.0f32; batch * t * heads * cols], t, cols));
            let targets = buffers.each_mut().map(|(buffer, t, cols)| HeadsOut {
                ptr: buffer.as_mut_ptr(),
                t: *t,
                row_stride: heads * *cols,
                cols: *cols,
            });
            problem.backward(&q, &k, &v, &output, &lse, &grad, targets);
            let [dq, dk, dv] = buffers.map(|(buffer, t, cols)| {
                let data = TensorData::new(buffer, [batch, t, heads, cols]);
                FlexTensor::from_data(data).transpose(1, 2)
            });
            Some((dq, dk, dv))
        }

        fn fused_self_attention(
            qkv: FloatTensor<Self>,
            heads: usize,
            padding: BoolTensor<Self>,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<FloatTensor<Self>> {
            Self::fused_self_attention_forward(qkv, heads, padding, causal, scale, dropout, seed)
                .map(|(output, _)| output)
        }

        fn fused_self_attention_forward(
            qkv: FloatTensor<Self>,
            heads: usize,
            padding: BoolTensor<Self>,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<(FloatTensor<Self>, FloatTensor<Self>)> {
            let [q, k, v] = View::packed(&qkv, heads)?;
            let problem = Problem::new(&q, &k, &v, padding, causal, scale, dropout, seed)?;
            let (output, lse) = problem.forward(&q, &k, &v);
            let (batch, time, width) = (problem.batch, problem.tq, heads * problem.dv);
            let output = TensorData::new(output, [batch, time, width]);
            Some((FlexTensor::from_data(output), lse))
        }

        fn fused_self_attention_backward(
            qkv: FloatTensor<Self>,
            output: FloatTensor<Self>,
            lse: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            heads: usize,
            padding: BoolTensor<Self>,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<FloatTensor<Self>> {
            let [q, k, v] = View::packed(&qkv, heads)?;
            // The output and its gradient `[batch, time, width]` as `[batch, heads, time, dv]`.
            let split = |x: &FlexTensor| {
                let [batch, time, width] = x.layout().shape()[..] else {
                    return None;
                };
                View::new(
                    &x.reshape([batch, time, heads, width / heads].into())
                        .transpose(1, 2),
                )
            };
            let (output, grad) = (split(&output)?, split(&grad)?);
            let problem = Problem::new(&q, &k, &v, padding, causal, scale, dropout, seed)?;
            let lse = crate::models::gelu::contiguous(&lse);
            let (batch, time, width) = (problem.batch, problem.tq, heads * problem.d);
            // One buffer for the three parts' gradients, each written where its part lies.
            let mut dqkv = vec![0.0f32; batch * time * 3 * width];
            let base = dqkv.as_mut_ptr();
            let targets = [0, 1, 2].map(|part| HeadsOut {
                ptr: base.wrapping_add(part * width),
                t: time,
                row_stride: 3 * width,
                cols: problem.d,
            });
            problem.backward(&q, &k, &v, &output, &lse, &grad, targets);
            Some(FlexTensor::from_data(TensorData::new(
                dqkv,
                [batch, time, 3 * width],
            )))
        }
    }

    /// A 4-D f32 tensor read in place through its strides, so the models' head-split views
    /// (`swap_dims` of a projection) are not copied.
    struct View {
        tensor: FlexTensor,
        dims: [usize; 4],
        strides: [isize; 4],
        offset: usize,
    }

    impl View {
        fn new(tensor: &FlexTensor) -> Option<View> {
            let layout = tensor.layout();
            if tensor.dtype() != DType::F32 || layout.num_dims() != 4 {
                return None;
            }
            let tensor = in_place_or_contiguous(tensor);
            let layout = tensor.layout();
            let (shape, strides) = (layout.shape(), layout.strides());
            Some(View {
                dims: [shape[0], shape[1], shape[2], shape[3]],
                strides: [strides[0], strides[1], strides[2], strides[3]],
                offset: layout.start_offset(),
                tensor,
            })
        }

        /// Queries, keys and values `[batch, heads, time, width / heads]` read in place from a
        /// packed projection `[batch, time, 3·width]` laid out `[q | k | v]`.
        fn packed(qkv: &FlexTensor, heads: usize) -> Option<[View; 3]> {
            let layout = qkv.layout();
            if qkv.dtype() != DType::F32 || layout.num_dims() != 3 || heads == 0 {
                return None;
            }
            let [batch, time, three_widths] = layout.shape()[..] else {
                return None;
            };
            if three_widths % (3 * heads) != 0 {
                return None;
            }
            let tensor = in_place_or_contiguous(qkv);
            let layout = tensor.layout();
            let [s_batch, s_time, s_col] = layout.strides()[..] else {
                return None;
            };
            let (width, head_dim) = (three_widths / 3, three_widths / 3 / heads);
            Some([0, 1, 2].map(|part| View {
                tensor: tensor.clone(),
                dims: [batch, heads, time, head_dim],
                strides: [s_batch, head_dim as isize * s_col, s_time, s_col],
                offset: (layout.start_offset() as isize + (part * width) as isize * s_col) as usize,
            }))
        }

        /// The `[t, d]` matrix of head `h` of batch row `b`.
        fn head(&self, b: usize, h: usize) -> Mat {
            let at =
                self.offset as isize + b as isize * self.strides[0] + h as isize * self.strides[1];
            Mat {
                ptr: self.tensor.storage::<f32>().as_ptr().wrapping_offset(at),
                rs: self.strides[2],
                cs: self.strides[3],
            }
        }
    }

    /// The tensor itself when GEMM can read it through its strides (all positive), otherwise a
    /// contiguous copy.
    pub(crate) fn in_place_or_contiguous(tensor: &FlexTensor) -> FlexTensor {
        if tensor.layout().has_positive_strides() {
            tensor.clone()
        } else {
            tensor.to_contiguous()
        }
    }

    /// Where the kernel writes a `[batch, heads, t, cols]` result held time-major: head
    /// (b, h)'s `t × cols` matrix starts at `ptr + b·t·row_stride + h·cols`, its rows
    /// `row_stride` apart (`heads·cols` for a `[batch, t, heads, cols]` tensor, `3·width` for
    /// one part of the packed projection's gradient).
    #[derive(Clone, Copy)]
    struct HeadsOut {
        ptr: *mut f32,
        t: usize,
        row_stride: usize,
        cols: usize,
    }

    // SAFETY: the kernel runs one task per (batch, head), and heads' matrices are disjoint.
    unsafe impl Send for HeadsOut {}
    unsafe impl Sync for HeadsOut {}

    impl HeadsOut {
        /// Head (b, h)'s first element; rows are `row_stride` apart.
        fn head(self, b: usize, h: usize) -> *mut f32 {
            self.ptr
                .wrapping_add(b * self.t * self.row_stride + h * self.cols)
        }
    }

    /// A strided matrix for GEMM: element (i, j) at `ptr + i·rs + j·cs`.
    #[derive(Clone, Copy)]
    pub(crate) struct Mat {
        pub(crate) ptr: *const f32,
        pub(crate) rs: isize,
        pub(crate) cs: isize,
    }

    impl Mat {
        /// A row-major buffer of `cols` columns.
        pub(crate) fn dense(values: &[f32], cols: usize) -> Mat {
            Mat {
                ptr: values.as_ptr(),
                rs: cols as isize,
                cs: 1,
            }
        }

        /// The matrix from row `i` on.
        fn rows_from(self, i: usize) -> Mat {
            Mat {
                ptr: self.ptr.wrapping_offset(i as isize * self.rs),
                ..self
            }
        }

        pub(crate) fn transposed(self) -> Mat {
            Mat {
                rs: self.cs,
                cs: self.rs,
                ..self
            }
        }

        /// Element (i, j); the caller keeps it inside the matrix.
        fn at(self, i: usize, j: usize) -> f32 {
            // SAFETY: callers index within the view's dims, which its strides address.
            unsafe { *self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
        }
    }

    /// `dst[m×n]` (row-major with `dst_cols` columns) `= (dst if accumulate) + beta·lhs·rhs`,
    /// `lhs` `m×k`, `rhs` `k×n`, on one thread (attention: the heads already spread over the
    /// pool).
    ///
    /// # Safety
    /// Every matrix must address valid memory over its dimensions; `dst` is not aliased.
    unsafe fn product(
        shape: (usize, usize, usize),
        dst: *mut f32,
        dst_cols: usize,
        accumulate: bool,
        lhs: Mat,
        rhs: Mat,
        beta: f32,
    ) {
        let one_thread = gemm::Parallelism::None;
        unsafe { product_on(shape, dst, dst_cols, accumulate, lhs, rhs, beta, one_thread) }
    }

    /// [`product`] with the threading given.
    ///
    /// # Safety
    /// As for [`product`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn product_on(
        (m, n, k): (usize, usize, usize),
        dst: *mut f32,
        dst_cols: usize,
        accumulate: bool,
        lhs: Mat,
        rhs: Mat,
        beta: f32,
        parallelism: gemm::Parallelism,
    ) {
        if let Some(blas) = crate::models::blas::system_blas() {
            let threaded = matches!(parallelism, gemm::Parallelism::Rayon(_));
            // SAFETY: the caller's contract is BLAS's.
            let shape = (m, n, k);
            if unsafe { blas.product(shape, dst, dst_cols, accumulate, lhs, rhs, beta, threaded) } {
                return;
            }
        }
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                dst_cols as isize,
                accumulate,
                lhs.ptr,
                lhs.cs,
                lhs.rs,
                rhs.ptr,
                rhs.cs,
                rhs.rs,
                1.0,
                beta,
                false,
                false,
                false,
                parallelism,
            )
        }
    }

    /// The largest element (-inf for none), over eight lanes so the loop vectorises; the
    /// maximum is the same in any order.
    #[inline(always)]
    fn max_of(values: &[f32]) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let chunks = values.chunks_exact(8);
        let rest = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        for chunk in chunks {
            for (lane, &x) in lanes.iter_mut().zip(chunk) {
                *lane = lane.max(x);
            }
        }
        lanes.into_iter().fold(rest, f32::max)
    }

    /// Attention dropout: which weights survive, and the survivors' rescaling `1/(1-p)`.
    struct DropoutMask {
        seed: u64,
        threshold: u64,
        rescale: f32,
    }

    impl DropoutMask {
        /// Whether weight (query `i`, key `j`) of head `bh` (`batch·heads + head`) survives:
        /// element `((bh·tq + i)·tk + j)` of the seed's SplitMix64 stream against `p·2⁶⁴`.
        fn keeps(&self, counter: u64) -> bool {
            let state = self
                .seed
                .wrapping_add(counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            SplitMix64::new(state).next_u64() >= self.threshold
        }
    }

    /// One call's shapes and masks, checked; `None` sends the call to Burn's composition.
    struct Problem {
        batch: usize,
        heads: usize,
        tq: usize,
        tk: usize,
        d: usize,
        dv: usize,
        causal: bool,
        scale: f32,
        padding: Option<Vec<bool>>,
        dropout: Option<DropoutMask>,
    }

    /// Per-task buffers of a block of query rows against all keys.
    struct Scratch {
        probs: Vec<f32>,
        dropped: Vec<f32>,
        keep: Vec<bool>,
        dprobs: Vec<f32>,
        delta: Vec<f32>,
    }

    impl Problem {
        fn new(
            q: &View,
            k: &View,
            v: &View,
            padding: FlexTensor,
            causal: bool,
            scale: f64,
            dropout: f64,
            seed: u64,
        ) -> Option<Problem> {
            let [batch, heads, tq, d] = q.dims;
            let [_, _, tk, dv] = v.dims;
            let shapes_fit = k.dims == [batch, heads, tk, d] && v.dims[..2] == [batch, heads];
            let empty = [batch, heads, tq, tk, d, dv].contains(&0);
            if !shapes_fit || empty || !(0.0..1.0).contains(&dropout) {
                return None;
            }
            let shape = padding.layout().shape();
            if shape.num_dims() != 2 || shape[0] != batch || shape[1] != tk {
                return None;
            }
            let padding: Vec<bool> = padding.into_data().iter::<bool>().collect();
            // An all-false mask (no padding) costs no test per score.
            let padding = padding.contains(&true).then_some(padding);
            let dropout = (dropout > 0.0).then(|| DropoutMask {
                seed,
                threshold: (dropout * 18_446_744_073_709_551_616.0) as u64,
                rescale: (1.0 / (1.0 - dropout)) as f32,
            });
            Some(Problem {
                batch,
                heads,
                tq,
                tk,
                d,
                dv,
                causal,
                scale: scale as f32,
                padding,
                dropout,
            })
        }

        /// Keys query `i` may see: a prefix (all of them unless causal).
        fn visible(&self, i: usize) -> usize {
            if self.causal {
                (i + 1 + self.tk).saturating_sub(self.tq).min(self.tk)
            } else {
                self.tk
            }
        }

        /// Which of the first `keys` keys of batch row `b` are padding; `None` without padding.
        #[inline(always)]
        fn padded_keys(&self, b: usize, keys: usize) -> Option<&[bool]> {
            let first = b * self.tk;
            self.padding.as_ref().map(|p| &p[first..first + keys])
        }

        fn scratch(&self) -> Scratch {
            Scratch {
                probs: vec![0.0; ROWS * self.tk],
                dropped: vec![0.0; ROWS * self.tk],
                keep: vec![true; ROWS * self.tk],
                dprobs: vec![0.0; ROWS * self.tk],
                delta: vec![0.0; self.tq],
            }
        }

        /// Scores of rows `r0..r0+rows` against the first `keys` keys, scaled, into `probs`.
        fn scores(&self, q: Mat, k: Mat, r0: usize, rows: usize, keys: usize, probs: &mut [f32]) {
            // SAFETY: q has tq ≥ r0 + rows rows of d, k has tk ≥ keys rows of d; probs holds
            // rows × keys.
            unsafe {
                product(
                    (rows, keys, self.d),
                    probs.as_mut_ptr(),
                    keys,
                    false,
                    q.rows_from(r0),
                    k.transposed(),
                    self.scale,
                )
            }
        }

        /// Marks which weights of the block survive dropout (all without dropout).
        fn fill_keep(&self, bh: usize, r0: usize, rows: usize, keys: usize, keep: &mut [bool]) {
            let Some(dropout) = &self.dropout else {
                return;
            };
            for ri in 0..rows {
                let first = ((bh * self.tq + r0 + ri) * self.tk) as u64;
                for (j, kept) in keep[ri * keys..(ri + 1) * keys].iter_mut().enumerate() {
                    *kept = dropout.keeps(first + j as u64);
                }
            }
        }

        /// The output time-major, `[batch, tq, heads·dv]`, and the log-sum-exp
        /// `[batch, heads, tq]`.
        fn forward(&self, q: &View, k: &View, v: &View) -> (Vec<f32>, FlexTensor) {
            let (tq, dv) = (self.tq, self.dv);
            let mut output = vec![0.0f32; self.batch * self.heads * tq * dv];
            let mut lse = vec![0.0f32; self.batch * self.heads * tq];
            let out = HeadsOut {
                ptr: output.as_mut_ptr(),
                t: tq,
                row_stride: self.heads * dv,
                cols: dv,
            };
            lse.par_chunks_mut(tq).enumerate().for_each_init(
                || self.scratch(),
                |scratch, (bh, lse)| self.forward_head(bh, q, k, v, out, lse, scratch),
            );
            let dims = [self.batch, self.heads, tq];
            (output, FlexTensor::from_data(TensorData::new(lse, dims)))
        }

        fn forward_head(
            &self,
            bh: usize,
            q: &View,
            k: &View,
            v: &View,
            out: HeadsOut,
            lse: &mut [f32],
            scratch: &mut Scratch,
        ) {
            let (b, h) = (bh / self.heads, bh % self.heads);
            let (q, k, v) = (q.head(b, h), k.head(b, h), v.head(b, h));
            let (out, out_stride) = (out.head(b, h), out.row_stride);
            for r0 in (0..self.tq).step_by(ROWS) {
                let rows = ROWS.min(self.tq - r0);
                // Causal blocks stop at the last row's horizon: the keys beyond are masked.
                let keys = self.visible(r0 + rows - 1);
                if keys == 0 {
                    lse[r0..r0 + rows].fill(f32::NEG_INFINITY);
                    continue;
                }
                let probs = &mut scratch.probs[..rows * keys];
                self.scores(q, k, r0, rows, keys, probs);
                self.fill_keep(bh, r0, rows, keys, &mut scratch.keep);
                let keep = &scratch.keep;
                vectorised(
                    #[inline(always)]
                    || {
                        for ri in 0..rows {
                            let row = &mut probs[ri * keys..(ri + 1) * keys];
                            lse[r0 + ri] = self.softmax_row(b, r0 + ri, row);
                            if let Some(dropout) = &self.dropout {
                                let keep = &keep[ri * keys..(ri + 1) * keys];
                                for (p, &kept) in row.iter_mut().zip(keep) {
                                    *p = if kept { *p * dropout.rescale } else { 0.0 };
                                }
                            }
                        }
                    },
                );
                // SAFETY: probs is rows × keys, v has tk ≥ keys rows of dv, out is this head's
                // tq × dv matrix (rows out_stride apart), written by this task only.
                unsafe {
                    product(
                        (rows, self.dv, keys),
                        out.wrapping_add(r0 * out_stride),
                        out_stride,
                        false,
                        Mat::dense(probs, keys),
                        v,
                        1.0,
                    )
                }
            }
        }

        /// Softmax of query `i`'s scores in place (masked keys 0); returns the log-sum-exp,
        /// -inf when the query sees no key (its row stays 0). The loops have no branches, so
        /// they vectorise; the sum stays in key order.
        #[inline(always)]
        fn softmax_row(&self, b: usize, i: usize, row: &mut [f32]) -> f32 {
            let (seen, unseen) = row.split_at_mut(self.visible(i).min(row.len()));
            unseen.fill(0.0);
            if let Some(padded) = self.padded_keys(b, seen.len()) {
                for (x, &padded) in seen.iter_mut().zip(padded) {
                    *x = if padded { f32::NEG_INFINITY } else { *x };
                }
            }
            let max = max_of(seen);
            if max == f32::NEG_INFINITY {
                seen.fill(0.0);
                return max;
            }
            for x in seen.iter_mut() {
                let e = exp_nonpositive(*x - max);
                *x = if *x == f32::NEG_INFINITY { 0.0 } else { e };
            }
            let sum: f32 = seen.iter().sum();
            let inverse = 1.0 / sum;
            seen.iter_mut().for_each(|x| *x *= inverse);
            max + sum.ln()
        }

        /// Query `i`'s probabilities in place from its scores and log-sum-exp `lse` (masked
        /// keys 0), as [`Problem::softmax_row`] gave them.
        #[inline(always)]
        fn probabilities_row(&self, b: usize, i: usize, lse: f32, row: &mut [f32]) {
            let visible = if lse == f32::NEG_INFINITY {
                0
            } else {
                self.visible(i).min(row.len())
            };
            let (seen, unseen) = row.split_at_mut(visible);
            unseen.fill(0.0);
            for x in seen.iter_mut() {
                *x = exp_nonpositive(*x - lse);
            }
            if let Some(padded) = self.padded_keys(b, seen.len()) {
                for (x, &padded) in seen.iter_mut().zip(padded) {
                    *x = if padded { 0.0 } else { *x };
                }
            }
        }

        /// Gradients of q, k and v from the output's gradient `grad`, added into `targets`
        /// (zeros, `[dq, dk, dv]`).
        #[allow(clippy::too_many_arguments)]
        fn backward(
            &self,
            q: &View,
            k: &View,
            v: &View,
            output: &View,
            lse: &[f32],
            grad: &View,
            targets: [HeadsOut; 3],
        ) {
            let tq = self.tq;
            let views = Heads {
                q,
                k,
                v,
                output,
                grad,
            };
            (0..self.batch * self.heads).into_par_iter().for_each_init(
                || self.scratch(),
                |scratch, bh| {
                    let lse = &lse[bh * tq..(bh + 1) * tq];
                    self.backward_head(bh, views, lse, targets, scratch)
                },
            );
        }

        fn backward_head(
            &self,
            bh: usize,
            views: Heads,
            lse: &[f32],
            targets: [HeadsOut; 3],
            scratch: &mut Scratch,
        ) {
            let (b, h) = (bh / self.heads, bh % self.heads);
            let [q, k, v, output, grad] =
                [views.q, views.k, views.v, views.output, views.grad].map(|x| x.head(b, h));
            let [dq, dk, dv] = targets.map(|target| (target.head(b, h), target.row_stride));
            let Scratch {
                probs,
                dropped,
                keep,
                dprobs,
                delta,
            } = scratch;
            // rowsum(dO ∘ O) = Σ_j P_ij dP_ij, also with dropout (O holds the dropped weights).
            for (i, delta) in delta.iter_mut().enumerate() {
                *delta = (0..self.dv).map(|c| grad.at(i, c) * output.at(i, c)).sum();
            }
            for r0 in (0..self.tq).step_by(ROWS) {
                let rows = ROWS.min(self.tq - r0);
                let keys = self.visible(r0 + rows - 1);
                if keys == 0 {
                    continue;
                }
                let n = rows * keys;
                let probs = &mut probs[..n];
                self.scores(q, k, r0, rows, keys, probs);
                // P recomputed from the saved log-sum-exp.
                vectorised(
                    #[inline(always)]
                    || {
                        for ri in 0..rows {
                            let row = &mut probs[ri * keys..(ri + 1) * keys];
                            self.probabilities_row(b, r0 + ri, lse[r0 + ri], row);
                        }
                    },
                );
                self.fill_keep(bh, r0, rows, keys, keep);
                let rescale = self.dropout.as_ref().map(|d| d.rescale);
                let weights: &[f32] = match rescale {
                    None => &*probs,
                    Some(rescale) => {
                        for ((w, &p), &kept) in dropped[..n].iter_mut().zip(&*probs).zip(&keep[..n])
                        {
                            *w = if kept { p * rescale } else { 0.0 };
                        }
                        &dropped[..n]
                    }
                };
                let dprobs = &mut dprobs[..n];
                // SAFETY (all four products): the block matrices are rows × keys; q, dq are
                // tq × d, k, dk are tk × d, v, dv are tk × dv, grad is tq × dv, with
                // r0 + rows ≤ tq and keys ≤ tk; dq, dk and dv are this head's matrices (rows
                // their strides apart), written by this task only.
                unsafe {
                    // dV += Wᵀ dO, W the (dropped) weights.
                    product(
                        (keys, self.dv, rows),
                        dv.0,
                        dv.1,
                        true,
                        Mat::dense(weights, keys).transposed(),
                        grad.rows_from(r0),
                        1.0,
                    );
                    // dW = dO Vᵀ.
                    product(
                        (rows, keys, self.dv),
                        dprobs.as_mut_ptr(),
                        keys,
                        false,
                        grad.rows_from(r0),
                        v.transposed(),
                        1.0,
                    );
                }
                // dS = P ∘ (dP − rowsum(dO ∘ O)), dP = dW through the dropout mask.
                vectorised(
                    #[inline(always)]
                    || {
                        for ri in 0..rows {
                            let delta = delta[r0 + ri];
                            let span = ri * keys..(ri + 1) * keys;
                            let row = dprobs[span.clone()].iter_mut().zip(&probs[span.clone()]);
                            match rescale {
                                None => row.for_each(|(ds, &p)| *ds = p * (*ds - delta)),
                                Some(rescale) => {
                                    for ((ds, &p), &kept) in row.zip(&keep[span]) {
                                        let dp = if kept { *ds * rescale } else { 0.0 };
                                        *ds = p * (dp - delta);
                                    }
                                }
                            }
                        }
                    },
                );
                unsafe {
                    // dQ = scale · dS K.
                    product(
                        (rows, self.d, keys),
                        dq.0.wrapping_add(r0 * dq.1),
                        dq.1,
                        false,
                        Mat::dense(dprobs, keys),
                        k,
                        self.scale,
                    );
                    // dK += scale · dSᵀ Q.
                    product(
                        (keys, self.d, rows),
                        dk.0,
                        dk.1,
                        true,
                        Mat::dense(dprobs, keys).transposed(),
                        q.rows_from(r0),
                        self.scale,
                    );
                }
            }
        }
    }

    /// The backward's inputs.
    #[derive(Clone, Copy)]
    struct Heads<'a> {
        q: &'a View,
        k: &'a View,
        v: &'a View,
        output: &'a View,
        grad: &'a View,
    }

    /// Which weights of an `[batch, heads, tq, tk]` attention survive dropout with `seed`: the
    /// kernel's mask, for the tests' reference.
    #[cfg(test)]
    pub(super) fn dropout_keeps(
        [batch, heads, tq, tk]: [usize; 4],
        dropout: f64,
        seed: u64,
    ) -> Vec<bool> {
        let mask = DropoutMask {
            seed,
            threshold: (dropout * 18_446_744_073_709_551_616.0) as u64,
            rescale: 1.0,
        };
        (0..(batch * heads * tq * tk) as u64)
            .map(|counter| mask.keeps(counter))
            .collect()
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;
    use burn::tensor::module::attention_fallback;

    fn normal(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// `[b, h, t, d]` as the models make it: `[b, t, h, d]` with the middle axes swapped (a
    /// strided view), or contiguous.
    fn input([b, h, t, d]: [usize; 4], strided: bool, device: &Device) -> Tensor<4> {
        if strided {
            normal([b, t, h, d], device).swap_dims(1, 2)
        } else {
            normal([b, h, t, d], device)
        }
    }

    /// Burn's composition with the same masking; `keep` an explicit dropout mask.
    fn reference(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: &Mask,
        keep: Option<(Tensor<4>, f64)>,
    ) -> Tensor<4> {
        let [b, h, tq, d] = q.dims();
        let tk = k.dims()[2];
        let padding = match mask {
            Mask::KeyPadding(p) => Some(p.clone().reshape([b, 1, 1, tk]).expand([b, h, tq, tk])),
            _ => None,
        };
        let causal = matches!(mask, Mask::Causal);
        let Some((keep, dropout)) = keep else {
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: causal,
            };
            return attention_fallback(q, k, v, padding, None, options);
        };
        let device = q.device();
        let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f64).sqrt());
        if causal {
            let rows = Tensor::<1, Int>::arange(0..tq as i64, &device)
                .reshape([tq, 1])
                .add_scalar(tk as i64 - tq as i64);
            let cols = Tensor::<1, Int>::arange(0..tk as i64, &device).reshape([1, tk]);
            let future = cols
                .greater(rows)
                .reshape([1, 1, tq, tk])
                .expand([b, h, tq, tk]);
            scores = scores.mask_fill(future, f32::NEG_INFINITY);
        }
        if let Some(padding) = padding {
            scores = scores.mask_fill(padding, f32::NEG_INFINITY);
        }
        (softmax(scores, 3) * keep)
            .div_scalar(1.0 - dropout)
            .matmul(v)
    }

    /// Values and the gradients of q, k and v equal the reference's, within 1e-5 relative.
    fn check(shapes: [[usize; 4]; 2], strided: bool, mask: Mask, dropout: f64) {
        let device = Device::flex().autodiff();
        let [q_shape, k_shape] = shapes;
        let v_shape = [k_shape[0], k_shape[1], k_shape[2], k_shape[3] + 3];
        let q = input(q_shape, strided, &device);
        let k = input(k_shape, strided, &device);
        let v = input(v_shape, strided, &device);
        let seed = 0x5eed_1234_abcd;
        let keep = (dropout > 0.0).then(|| {
            let shape = [q_shape[0], q_shape[1], q_shape[2], k_shape[2]];
            let keeps = flex_kernel::dropout_keeps(shape, dropout, seed);
            let kept = keeps.iter().filter(|&&k| k).count() as f64 / keeps.len() as f64;
            // Four standard deviations of the kept share.
            let sd = (dropout * (1.0 - dropout) / keeps.len() as f64).sqrt();
            assert!((kept - (1.0 - dropout)).abs() < 4.0 * sd, "kept {kept}");
            let values = keeps.iter().map(|&k| k as u8 as f32).collect::<Vec<_>>();
            (
                Tensor::from_data(TensorData::new(values, shape), &device),
                dropout,
            )
        });
        let ours = [q.clone(), k.clone(), v.clone()].map(|x| x.require_grad());
        let theirs = [q, k, v].map(|x| x.require_grad());
        let [q1, k1, v1] = ours.clone();
        let scale = 1.0 / (q_shape[3] as f64).sqrt();
        let y_ours = attention_seeded(q1, k1, v1, mask.clone(), scale, dropout, seed);
        let [q2, k2, v2] = theirs.clone();
        let y_theirs = reference(q2, k2, v2, &mask, keep);
        assert_close(y_ours.clone(), y_theirs.clone());
        // Weight each output differently so a gradient in the wrong place shows.
        let weights = normal(y_ours.dims(), &device);
        let grads_ours = (y_ours * weights.clone()).sum().backward();
        let grads_theirs = (y_theirs * weights).sum().backward();
        for (a, b) in ours.iter().zip(&theirs) {
            assert_close(a.grad(&grads_ours).unwrap(), b.grad(&grads_theirs).unwrap());
        }
    }

    /// Within 1e-5 relative, elements near zero within 1e-5 of the tensor's largest (a
    /// gradient that cancels to 0 in one evaluation order is 1e-7 of its terms in another).
    fn assert_close(ours: Tensor<4>, theirs: Tensor<4>) {
        let largest: f32 = theirs.clone().abs().max().into_scalar();
        let tolerance = Tolerance::rel_abs(5e-6, 1e-5 * largest);
        ours.into_data()
            .assert_approx_eq::<f32>(&theirs.into_data(), tolerance);
    }

    fn padding(batch: usize, tk: usize, lengths: &[usize], device: &Device) -> Tensor<2, Bool> {
        let values: Vec<bool> = (0..batch)
            .flat_map(|b| (0..tk).map(move |j| j >= lengths[b]))
            .collect();
        Tensor::from_data(TensorData::new(values, [batch, tk]), device)
    }

    #[test]
    fn unmasked_equals_burns_composition() {
        for strided in [false, true] {
            // 130 queries: three row blocks, the last partial.
            check([[2, 3, 130, 16], [2, 3, 130, 16]], strided, Mask::None, 0.0);
        }
    }

    #[test]
    fn causal_equals_burns_composition_also_after_a_cache() {
        for strided in [false, true] {
            check([[2, 2, 70, 8], [2, 2, 70, 8]], strided, Mask::Causal, 0.0);
            // New queries after cached keys: the mask aligned bottom-right.
            check([[2, 2, 3, 8], [2, 2, 11, 8]], strided, Mask::Causal, 0.0);
        }
    }

    /// With dropout, Burn's composition given the kernel's mask: the backward regenerates the
    /// forward's mask (a different mask there would break the gradients).
    #[test]
    fn dropout_equals_the_composition_with_the_kernels_mask() {
        let device = Device::flex().autodiff();
        check([[2, 2, 70, 8], [2, 2, 70, 8]], true, Mask::Causal, 0.3);
        let mask = Mask::KeyPadding(padding(2, 9, &[9, 5], &device));
        check([[2, 2, 5, 8], [2, 2, 9, 8]], false, mask, 0.5);
    }

    /// Dropout acts in training only, with a fresh mask per call.
    #[test]
    fn dropout_applies_on_the_autodiff_device_only() {
        let dropout = burn::nn::DropoutConfig::new(0.5).init();
        for (device, active) in [(Device::flex(), false), (Device::flex().autodiff(), true)] {
            let rate = dropout_rate(&dropout, &device);
            assert_eq!(rate, if active { 0.5 } else { 0.0 });
            let [q, k, v] = [0, 1, 2].map(|_| normal([1, 2, 16, 8], &device));
            let call = || attention(q.clone(), k.clone(), v.clone(), Mask::Causal, None, rate);
            let (a, b) = (call(), call());
            let differ = !a.clone().equal(b).all().into_scalar::<bool>();
            assert_eq!(differ, active);
            let plain = attention(q.clone(), k.clone(), v.clone(), Mask::Causal, None, 0.0);
            assert_eq!(!a.equal(plain).all().into_scalar::<bool>(), active);
        }
    }

    /// The packed self-attention: values and the gradient of `qkv` equal the reference's on the
    /// split heads, merged.
    fn check_packed([batch, heads, time, d]: [usize; 4], mask: Mask, dropout: f64) {
        let device = Device::flex().autodiff();
        let width = heads * d;
        let qkv = Tensor::<3>::random(
            [batch, time, 3 * width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let seed = 0x5eed_4321;
        let keep = (dropout > 0.0).then(|| {
            let shape = [batch, heads, time, time];
            let keeps = flex_kernel::dropout_keeps(shape, dropout, seed);
            let values = keeps.iter().map(|&k| k as u8 as f32).collect::<Vec<_>>();
            let keep = Tensor::from_data(TensorData::new(values, shape), &device);
            (keep, dropout)
        });
        let (ours, theirs) = (qkv.clone().require_grad(), qkv.require_grad());
        let y_ours = packed_seeded(ours.clone(), heads, mask.clone(), dropout, seed);
        let [q, k, v] = super::super::split_heads(theirs.clone(), heads);
        let y_theirs = reference(q, k, v, &mask, keep)
            .swap_dims(1, 2)
            .reshape([batch, time, width]);
        let as4 = |x: Tensor<3>| x.unsqueeze::<4>();
        assert_close(as4(y_ours.clone()), as4(y_theirs.clone()));
        let weights = Tensor::<3>::random(y_ours.dims(), Distribution::Normal(0.0, 1.0), &device);
        let grads_ours = (y_ours * weights.clone()).sum().backward();
        let grads_theirs = (y_theirs * weights).sum().backward();
        assert_close(
            as4(ours.grad(&grads_ours).unwrap()),
            as4(theirs.grad(&grads_theirs).unwrap()),
        );
    }

    #[test]
    fn packed_self_attention_equals_burns_composition() {
        let device = Device::flex().autodiff();
        check_packed([2, 3, 70, 8], Mask::Causal, 0.0);
        check_packed([2, 2, 130, 16], Mask::None, 0.0);
        let mask = Mask::KeyPadding(padding(3, 67, &[67, 40, 1], &device));
        check_packed([3, 2, 67, 8], mask, 0.0);
        check_packed([2, 2, 70, 8], Mask::Causal, 0.3);
    }

    #[test]
    fn key_padding_and_cross_attention_equal_burns_composition() {
        let device = Device::flex().autodiff();
        for strided in [false, true] {
            let mask = Mask::KeyPadding(padding(3, 67, &[67, 40, 1], &device));
            check([[3, 2, 67, 8], [3, 2, 67, 8]], strided, mask, 0.0);
            // Cross-attention: 5 queries over 9 keys, padded or not.
            let mask = Mask::KeyPadding(padding(3, 9, &[9, 4, 7], &device));
            check([[3, 2, 5, 8], [3, 2, 9, 8]], strided, mask, 0.0);
            check([[3, 2, 5, 8], [3, 2, 9, 8]], strided, Mask::None, 0.0);
        }
    }
}
