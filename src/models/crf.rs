//! A linear-chain CRF over tag sequences (Lafferty et al. 2001; Lample et al. 2016 on BiLSTMs):
//! learned start, end and tag-to-tag transition scores added to per-token emissions. The loss is
//! the negative log-likelihood with the partition function from the forward algorithm; decoding
//! is Viterbi. Transitions the tagging scheme forbids (`I-X` after `O` or after another type,
//! and at the start; for BIOES also `E-X` likewise and ending inside an entity) get a fixed
//! penalty that no learned score can overcome.

use burn::module::Param;
use burn::prelude::*;

/// The score of a forbidden transition: far below any learned one, finite so sums stay finite.
const FORBIDDEN: f32 = -10_000.0;

#[derive(Module, Debug)]
pub struct Crf {
    /// `[from, to]`.
    transitions: Param<Tensor<2>>,
    start: Param<Tensor<1>>,
    end: Param<Tensor<1>>,
    /// The scheme's constraints, `[from, to]` then start then end, row-major (0 or FORBIDDEN).
    #[module(skip)]
    penalties: Penalties,
}

#[derive(Debug, Clone)]
struct Penalties {
    tags: usize,
    transitions: Vec<f32>,
    start: Vec<f32>,
    end: Vec<f32>,
}

/// `(prefix, type)` of a BIO/BIOES tag: `("B", "PER")`, `("O", "")`.
fn parse(tag: &str) -> (&str, &str) {
    match tag.split_once('-') {
        Some((prefix, kind)) => (prefix, kind),
        None => (tag, ""),
    }
}

/// May `to` follow `from` (`None`: the sentence start)?
pub fn allowed(from: Option<&str>, to: &str) -> bool {
    let (to_prefix, to_type) = parse(to);
    if !matches!(to_prefix, "I" | "E") {
        return true;
    }
    match from.map(parse) {
        Some((from_prefix, from_type)) => matches!(from_prefix, "B" | "I") && from_type == to_type,
        None => false,
    }
}

/// May a sentence end with `tag`? Only BIOES forbids it (inside an entity, before its `E-`).
fn may_end(tag: &str, bioes: bool) -> bool {
    !bioes || !matches!(parse(tag).0, "B" | "I")
}

impl Penalties {
    fn new(tags: &[String]) -> Self {
        let bioes = tags.iter().any(|t| matches!(parse(t).0, "E" | "S"));
        let score = |ok: bool| if ok { 0.0 } else { FORBIDDEN };
        Self {
            tags: tags.len(),
            transitions: tags
                .iter()
                .flat_map(|from| tags.iter().map(move |to| score(allowed(Some(from), to))))
                .collect(),
            start: tags.iter().map(|t| score(allowed(None, t))).collect(),
            end: tags.iter().map(|t| score(may_end(t, bioes))).collect(),
        }
    }
}

/// `log(sum(exp(x)))` over `dim`, kept as a size-1 dimension; the max is subtracted first.
fn log_sum_exp<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let max = x.clone().max_dim(dim).detach();
    (x - max.clone()).exp().sum_dim(dim).log() + max
}

impl Crf {
    /// Zero-initialised scores over `tags` (their names give the constraints).
    pub fn new(tags: &[String], device: &Device) -> Self {
        let n = tags.len();
        Self {
            transitions: Param::from_tensor(Tensor::zeros([n, n], device)),
            start: Param::from_tensor(Tensor::zeros([n], device)),
            end: Param::from_tensor(Tensor::zeros([n], device)),
            penalties: Penalties::new(tags),
        }
    }

    /// Transition, start and end scores with the constraints added.
    fn scores(&self, device: &Device) -> (Tensor<2>, Tensor<1>, Tensor<1>) {
        let p = &self.penalties;
        let n = p.tags;
        let fixed = |values: &[f32]| Tensor::<1>::from_floats(values, device);
        (
            self.transitions.val() + fixed(&p.transitions).reshape([n, n]),
            self.start.val() + fixed(&p.start),
            self.end.val() + fixed(&p.end),
        )
    }

    /// The mean over sentences of `-log p(tags | emissions)`; `emissions` `[batch, time, tags]`,
    /// `tags` `[batch, time]`, `lengths` the real lengths (at least 1; padding after them).
    pub fn neg_log_likelihood(
        &self,
        emissions: Tensor<3>,
        tags: Tensor<2, Int>,
        lengths: &[usize],
    ) -> Tensor<1> {
        let [batch, time, n] = emissions.dims();
        let device = emissions.device();
        let (transitions, start, end) = self.scores(&device);
        let keep: Vec<f32> = lengths
            .iter()
            .flat_map(|&len| (0..time).map(move |t| if t < len { 1.0 } else { 0.0 }))
            .collect();
        let keep = Tensor::<1>::from_floats(keep.as_slice(), &device).reshape([batch, time]);

        // The gold path's score: emissions, transitions between consecutive real tokens, start
        // and end.
        let emitted = emissions
            .clone()
            .gather(2, tags.clone().unsqueeze_dim(2))
            .reshape([batch, time]);
        let mut gold = (emitted * keep.clone()).sum_dim(1).reshape([batch]);
        let first = tags.clone().narrow(1, 0, 1).reshape([batch]);
        gold = gold + start.clone().select(0, first);
        let last_index: Vec<i64> = lengths.iter().map(|&l| l as i64 - 1).collect();
        let last_index = Tensor::<1, Int>::from_data(last_index.as_slice(), &device);
        let last = tags
            .clone()
            .gather(1, last_index.reshape([batch, 1]))
            .reshape([batch]);
        gold = gold + end.clone().select(0, last);
        if time > 1 {
            let from = tags.clone().narrow(1, 0, time - 1);
            let to = tags.narrow(1, 1, time - 1);
            let pair = (from * n as i64 + to).reshape([batch * (time - 1)]);
            let stepped = transitions
                .clone()
                .reshape([n * n])
                .select(0, pair)
                .reshape([batch, time - 1]);
            gold = gold
                + (stepped * keep.clone().narrow(1, 1, time - 1))
                    .sum_dim(1)
                    .reshape([batch]);
        }

        // The partition function by the forward algorithm; past a sentence's end its scores stay.
        let emission_at = |t: usize| emissions.clone().narrow(1, t, 1).reshape([batch, n]);
        let mut alpha = emission_at(0) + start.unsqueeze_dim(0);
        let transitions = transitions.unsqueeze_dim::<3>(0);
        for t in 1..time {
            let through = alpha.clone().reshape([batch, n, 1]) + transitions.clone();
            let next = log_sum_exp(through, 1).reshape([batch, n]) + emission_at(t);
            let live = keep.clone().narrow(1, t, 1);
            alpha = next * live.clone() + alpha * (live.neg() + 1.0);
        }
        let log_z = log_sum_exp(alpha + end.unsqueeze_dim(0), 1).reshape([batch]);
        (log_z - gold).mean()
    }

    /// The most likely tag sequence of each sentence (Viterbi), for emissions read back from
    /// the model: `emissions[b]` is `[length_b, tags]` row-major.
    pub fn decode(&self, emissions: &[Vec<f32>]) -> Vec<Vec<usize>> {
        let device = self.transitions.device();
        let (transitions, start, end) = self.scores(&device);
        let read = |t: Tensor<1>| t.try_into_vec_as::<f32>().expect("f32 scores");
        let n = self.penalties.tags;
        let transitions = read(transitions.reshape([n * n]));
        let (start, end) = (read(start), read(end));
        emissions
            .iter()
            .map(|e| viterbi(e, n, &transitions, &start, &end))
            .collect()
    }
}

/// The arg-max path of one sentence (`emissions` `[length, n]` row-major).
pub fn viterbi(
    emissions: &[f32],
    n: usize,
    transitions: &[f32],
    start: &[f32],
    end: &[f32],
) -> Vec<usize> {
    let length = emissions.len() / n;
    if length == 0 {
        return Vec::new();
    }
    let mut score: Vec<f32> = (0..n).map(|j| start[j] + emissions[j]).collect();
    let mut back = vec![0usize; length * n];
    for t in 1..length {
        let mut next = vec![f32::NEG_INFINITY; n];
        for (j, slot) in next.iter_mut().enumerate() {
            let (best, from) = (0..n)
                .map(|i| (score[i] + transitions[i * n + j], i))
                .fold((f32::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a });
            *slot = best + emissions[t * n + j];
            back[t * n + j] = from;
        }
        score = next;
    }
    let mut tag = (0..n)
        .max_by(|&a, &b| (score[a] + end[a]).total_cmp(&(score[b] + end[b])))
        .expect("at least one tag");
    let mut path = vec![tag; length];
    for t in (1..length).rev() {
        tag = back[t * n + tag];
        path[t - 1] = tag;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn tags() -> Vec<String> {
        ["O", "B-PER", "I-PER", "B-LOC"].map(String::from).to_vec()
    }

    #[test]
    fn i_never_follows_o_or_another_type_or_the_start() {
        assert!(!allowed(Some("O"), "I-PER"));
        assert!(!allowed(Some("B-LOC"), "I-PER"));
        assert!(!allowed(None, "I-PER"));
        assert!(allowed(Some("B-PER"), "I-PER"));
        assert!(allowed(Some("I-PER"), "I-PER"));
        assert!(allowed(Some("I-PER"), "O"));
        assert!(allowed(None, "B-LOC"));
        assert!(!allowed(Some("S-PER"), "E-PER"));
        assert!(allowed(Some("B-PER"), "E-PER"));
    }

    /// Score every path by brute force: the CRF's log-likelihood must equal the log of the gold
    /// path's share, and Viterbi must return the best path.
    #[test]
    fn likelihood_and_viterbi_equal_brute_force() {
        let device = Device::flex();
        let tags = tags();
        let n = tags.len();
        let mut crf = Crf::new(&tags, &device);
        crf.transitions = Param::from_tensor(Tensor::random(
            [n, n],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        crf.start =
            Param::from_tensor(Tensor::random([n], Distribution::Normal(0.0, 1.0), &device));
        crf.end = Param::from_tensor(Tensor::random([n], Distribution::Normal(0.0, 1.0), &device));
        let (time, lengths) = (4, [4usize, 3]);
        let emissions = Tensor::<3>::random([2, time, n], Distribution::Normal(0.0, 2.0), &device);
        let gold = [[1i64, 2, 0, 3], [3, 0, 1, 0]];
        let (trans, start, end) = crf.scores(&device);
        let read = |t: Tensor<1>| t.try_into_vec_as::<f32>().unwrap();
        let (trans, start, end) = (read(trans.reshape([n * n])), read(start), read(end));
        let all_emissions = read(emissions.clone().reshape([2 * time * n]));

        let mut expected_nll = 0.0f64;
        let mut rows = Vec::new();
        for (b, &len) in lengths.iter().enumerate() {
            let e = &all_emissions[b * time * n..][..len * n];
            let score = |path: &[usize]| -> f64 {
                let mut s = (start[path[0]] + end[path[len - 1]]) as f64;
                for t in 0..len {
                    s += e[t * n + path[t]] as f64;
                    if t > 0 {
                        s += trans[path[t - 1] * n + path[t]] as f64;
                    }
                }
                s
            };
            let mut best = (f64::NEG_INFINITY, vec![]);
            let mut log_z_terms = Vec::new();
            for code in 0..n.pow(len as u32) {
                let path: Vec<usize> = (0..len).map(|t| code / n.pow(t as u32) % n).collect();
                let s = score(&path);
                log_z_terms.push(s);
                if s > best.0 {
                    best = (s, path);
                }
            }
            let max = log_z_terms
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max);
            let log_z = max
                + log_z_terms
                    .iter()
                    .map(|s| (s - max).exp())
                    .sum::<f64>()
                    .ln();
            let gold_path: Vec<usize> = gold[b][..len].iter().map(|&t| t as usize).collect();
            expected_nll += log_z - score(&gold_path);
            let decoded = viterbi(e, n, &trans, &start, &end);
            assert_eq!(decoded, best.1, "sentence {b}");
            rows.push(e.to_vec());
            // The best path obeys the constraints.
            assert!(
                decoded
                    .windows(2)
                    .all(|w| allowed(Some(&tags[w[0]]), &tags[w[1]]))
            );
        }
        assert_eq!(
            crf.decode(&rows),
            vec![
                viterbi(&rows[0], n, &trans, &start, &end),
                viterbi(&rows[1], n, &trans, &start, &end)
            ]
        );
        let tags_tensor = Tensor::<2, Int>::from_data(gold, &device);
        let nll: f64 = crf
            .neg_log_likelihood(emissions, tags_tensor, &lengths)
            .into_scalar::<f64>();
        let expected = expected_nll / 2.0;
        assert!(
            (nll - expected).abs() < 1e-3 * expected.abs().max(1.0),
            "{nll} vs {expected}"
        );
    }
}
