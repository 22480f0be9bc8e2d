"""Attention parts of the CCSA network (paper: "cross-scale space semantic feature coherent image
inpainting", /work/shared/papers/ccsa_cross_scale_semantic_attention.txt).

* Semantic coherent attention (SCA) layer, Sec. 3.2: **search** (Sec. 3.2.1) and **generation**
  (Sec. 3.2.2, Eq. 1-2).
* Cross-scale reconstruction, Sec. 3.3, Eq. 3-6.

Choices where the text is ambiguous (each is repeated beside the code that makes it):

* A "patch" is one feature vector (a 1x1 patch). Cross-correlating with a 1x1 patch used as a
  convolution filter is a dot product, so the search's convolution over all known-region
  filters is a batched matrix product (same numbers, one call for the whole batch).
* cos(a, b) = <a, b> / (|a| |b|) with |a| = sqrt(<a, a> + EPS): smooth everywhere, so the
  layer is differentiable even for all-zero feature vectors.
* Eq. 1 as printed: Dmax_i = cos(m_i, m'_i) and Dad_i = cos(m_i, m_{i-1}) both compare the
  *current hole patch* m_i, as it came into the layer (the search query), the first with its
  best context match m'_i, the second with the previous generated hole patch m_{i-1} (as in
  CSA, Liu et al. 2019, whose Eq. 1 this is: "the similarity between two adjacent generated
  patches"). Dad_i does not compare m'_i with m_{i-1}: tests/test_ccsa.py tells the readings
  apart. Both are clamped at 0 (a negative correlation counts as no correlation) so that
  the weights of Eq. 2 lie in [0, 1]; CCSA feeds the layer ReLU features, where cos >= 0.
* Eq. 2's weights are w_i = Dad_i / (Dad_i + Dmax_i + EPS) and 1 - w_i: they sum to 1, and
  when both correlations are 0 the patch keeps its context match (m_i = m'_i).
* "The upper-left patch of M'" starts the recursion and patches follow in raster order
  (row by row), so m_{i-1} is the previous hole patch in raster order.
* Known-region vectors pass through the SCA layer unchanged; an image with no known position
  at a level passes through unchanged (nothing to search).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def vector_norm(x: torch.Tensor) -> torch.Tensor:
    """|x| along the last dim, smoothed: sqrt(<x,x> + EPS)."""
    return torch.sqrt((x * x).sum(-1) + EPS)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) along the last dim (Eq. 1's normalised cross-correlation)."""
    return (a * b).sum(-1) / (vector_norm(a) * vector_norm(b))


# ----------------------------------------------------------------------------------------------
# Sec. 3.2.1 Search
# ----------------------------------------------------------------------------------------------
def sca_search(feats: torch.Tensor, hole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best known-region match m'_i and its score Dmax_i for every position (Sec. 3.2.1).

    feats: [B, N, C] feature vectors (1x1 patches), hole: [B, N] (1 = hole).
    Returns (match [B, N, C], dmax [B, N]). Every position gets its best *known* match; only
    hole positions use it. The known patches act as 1x1 convolution filters on the normalised
    map, i.e. one batched matrix product of normalised vectors. Rows of images with no known
    position are meaningless (the caller leaves such images unchanged).
    """
    unit = feats / vector_norm(feats).unsqueeze(-1)
    corr = unit @ unit.transpose(1, 2)  # [B, N(query), N(known filter)] cosine cross-correlation
    key_bias = torch.zeros_like(hole).masked_fill_(hole > 0.5, float("-inf")).unsqueeze(1)
    dmax, best = (corr + key_bias).max(-1)  # Dmax_i (differentiable through corr) and its index
    match = feats.gather(1, best.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))  # m'_i
    return match, dmax


# ----------------------------------------------------------------------------------------------
# Sec. 3.2.2 Generation (Eq. 1-2)
# ----------------------------------------------------------------------------------------------
def hole_order(hole: torch.Tensor, usable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raster-order indices of the hole positions of each image, padded to the longest list.

    hole: [B, N]; usable: [B] bool (images that take part). Returns (index [B, T] long,
    valid [B, T] bool); padded entries point at index 0 and are invalid.
    """
    is_hole = hole > 0.5
    if usable is not None:
        is_hole = is_hole & usable.unsqueeze(1)
    counts = is_hole.sum(1)
    t_max = int(counts.max()) if counts.numel() else 0
    n = hole.shape[1]
    # a stable sort of "not hole" puts hole positions first, in their raster order
    order = torch.sort((~is_hole).to(torch.uint8), dim=1, stable=True).indices[:, :t_max]
    valid = torch.arange(t_max, device=hole.device).unsqueeze(0) < counts.unsqueeze(1)
    order = torch.where(valid, order, torch.zeros_like(order))
    assert t_max <= n
    return order, valid


def _eq2_forward_loop(q_seq: torch.Tensor, p_seq: torch.Tensor, inv_norm_q: torch.Tensor,
                     d_eps: torch.Tensor) -> torch.Tensor:
    """Eq. 2's recursion, sequence-major ([T, B, C]): m_1 = m'_1; m_i = lerp(m'_i, m_{i-1}, w_i),
    w_i = Dad_i / (Dad_i + Dmax_i + EPS), Dad_i = max(<m_i, m_{i-1}> / (|m_i| |m_{i-1}|), 0).
    The per-step rows are views taken once (`unbind`), and each m_i is written in place into the
    output: no indexing or copy kernel per step."""
    out = torch.empty_like(p_seq)
    qs, ps, inv_q, ds, outs = q_seq.unbind(0), p_seq.unbind(0), inv_norm_q.unbind(0), d_eps.unbind(0), out.unbind(0)
    prev = outs[0]
    prev.copy_(ps[0])
    for i in range(1, len(ps)):
        cos = (qs[i] * prev).sum(-1) * inv_q[i] * torch.rsqrt((prev * prev).sum(-1) + 1e-8)
        dad = cos.clamp(min=0.0)
        w = dad / (dad + ds[i])
        prev = torch.lerp(ps[i], prev, w.unsqueeze(-1), out=outs[i])
    return out


def _eq2_backward_loop(grad_seq: torch.Tensor, w_col: torch.Tensor, diff: torch.Tensor,
                       u: torch.Tensor) -> torch.Tensor:
    """The only sequential part of Eq. 2's backward: the total g_i = dL/dm_i, i = T-1 .. 0,

        g_{T-1} = grad_{T-1},  g_k = grad_k + w g_{k+1} + <g_{k+1}, m_k - m'_{k+1}> u,

    with w, u of step k+1 (u = dw/dDad dcos/dm_k, precomputed for all steps): per step one
    product-sum and two fused multiply-adds written straight into the result (the carry is not
    kept apart; the rows are views taken once). Inputs of step k+1 sit at index k of w_col,
    diff, u."""
    g_all = torch.empty_like(grad_seq)
    grads, ws, diffs, us, gs = grad_seq.unbind(0), w_col.unbind(0), diff.unbind(0), u.unbind(0), g_all.unbind(0)
    last = len(grads) - 1
    g = gs[last]
    g.copy_(grads[last])
    for k in range(last - 1, -1, -1):
        s = (g * diffs[k]).sum(-1, keepdim=True)
        gk = torch.addcmul(grads[k], ws[k], g, out=gs[k])
        g = gk.addcmul_(s, us[k])
    return g_all


_COMPILED: dict[str, object] = {}


def _loop(name: str):
    """The recursion loops compiled by TorchScript: each step's few kernels are dispatched from
    C++, so the cost per hole position no longer includes Python (2-3x faster on CPU here; on
    CUDA the launches no longer wait on the interpreter). Falls back to the Python functions
    (same operations, same numbers) where TorchScript is unavailable."""
    if name not in _COMPILED:
        fn = {"forward": _eq2_forward_loop, "backward": _eq2_backward_loop}[name]
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation notice
                _COMPILED[name] = torch.jit.script(fn)
        except Exception:  # noqa: BLE001 - any scripting failure: keep the plain Python loop
            _COMPILED[name] = fn
    return _COMPILED[name]


class _Eq2Recursion(torch.autograd.Function):
    """Eq. 1-2 with a hand-written backward (autograd over a Python loop is slower).

    forward(query [B, T, C] (m_i as it came in), match [B, T, C] (m'_i), dmax [B, T] (>= 0))
    -> m [B, T, C]. The loops run over the T hole positions only, compiled (`_loop`); every step
    works on all images and channels at once. The backward loop carries only dL/dm_{i-1};
    everything that does not need the carry (Dad_i, the weights, the partial derivatives of the
    cosine) is computed for all i at once from the saved outputs.
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, match: torch.Tensor, dmax: torch.Tensor) -> torch.Tensor:
        q_seq = query.transpose(0, 1).contiguous()  # [T, B, C]: one contiguous row per step
        p_seq = match.transpose(0, 1).contiguous()
        inv_norm_q = torch.rsqrt(torch.linalg.vecdot(q_seq, q_seq) + EPS)  # [T, B]
        d_eps = dmax.transpose(0, 1) + EPS
        out = _loop("forward")(q_seq, p_seq, inv_norm_q, d_eps.contiguous())
        ctx.save_for_backward(q_seq, p_seq, dmax, out)
        return out.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q_seq, p_seq, dmax, m_seq = ctx.saved_tensors
        t_len = p_seq.shape[0]
        grad_seq = grad_out.transpose(0, 1).contiguous()  # [T, B, C]
        if t_len == 1:
            return torch.zeros_like(q_seq).transpose(0, 1), grad_seq.transpose(0, 1), torch.zeros_like(dmax)
        q, cur, prev = q_seq[1:], p_seq[1:], m_seq[:-1]  # step i = 2..T (1-based)
        d_eps = dmax.transpose(0, 1)[1:] + EPS
        norm_q = torch.sqrt(torch.linalg.vecdot(q, q) + EPS)
        norm_m = torch.sqrt(torch.linalg.vecdot(prev, prev) + EPS)
        inv_qm = 1.0 / (norm_q * norm_m)
        cos = torch.linalg.vecdot(q, prev) * inv_qm
        dad = cos.clamp(min=0)
        den = dad + d_eps
        w = dad / den
        dw_ddad = torch.where(cos > 0, d_eps / den ** 2, torch.zeros_like(cos))
        diff = prev - cur  # dm_i/dw
        # dcos/dm_{i-1} = q / (|q||m|) - cos m_{i-1} / |m|^2 and dcos/dq = m_{i-1} / (|q||m|) - cos q / |q|^2
        # are never formed: each is only ever scaled by a per-row factor, which goes into the
        # coefficients of q and m_{i-1} instead (two passes over [T-1, B, C] each, not four).
        u = torch.mul(q, (dw_ddad * inv_qm).unsqueeze(-1))  # the carry's rank-one part dw/dDad dcos/dm_{i-1}
        u.addcmul_(prev, (dw_ddad * cos / norm_m ** 2).unsqueeze(-1), value=-1.0)
        w_col = w.unsqueeze(-1).contiguous()
        g_all = _loop("backward")(grad_seq, w_col, diff, u)
        g = g_all[1:]
        gw = torch.linalg.vecdot(g, diff)  # dL/dw_i
        grad_p = torch.empty_like(p_seq)
        grad_p[0] = g_all[0]
        torch.mul(g, 1 - w_col, out=grad_p[1:])
        grad_q = torch.empty_like(q_seq)
        grad_q[0].zero_()
        gq = gw * dw_ddad  # dL/dcos_i
        torch.mul(prev, (gq * inv_qm).unsqueeze(-1), out=grad_q[1:])
        grad_q[1:].addcmul_(q, (gq * cos / norm_q ** 2).unsqueeze(-1), value=-1.0)
        grad_d = torch.zeros_like(dmax)
        grad_d[:, 1:] = (-gw * dad / den ** 2).transpose(0, 1)
        return grad_q.transpose(0, 1), grad_p.transpose(0, 1), grad_d


def generate_sequence(query: torch.Tensor, match: torch.Tensor, dmax: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2 over a padded sequence of hole patches, vectorised over batch and channels.

    query: [B, T, C] the hole patches m_i as they came into the layer, in generation order;
    match: [B, T, C] their context patches m'_i; dmax: [B, T] their Dmax_i.
    Returns the generated m [B, T, C]:
        m_1 = m'_1 (Dad_1 = 0)
        m_i = Dad_i/(Dad_i+Dmax_i) * m_{i-1} + Dmax_i/(Dad_i+Dmax_i) * m'_i,  i >= 2
        Dad_i = max(cos(m_i (query), m_{i-1} (generated)), 0), Dmax_i clamped at 0 likewise
        (module docstring), with EPS added to the denominator.
    The recursion is sequential in i (Dad_i depends on the generated m_{i-1}), so one compiled
    loop runs over the sequence; each step handles every image and channel at once. Padded
    tail entries of shorter images are computed but never read. Differentiable (custom backward).
    """
    if match.shape[1] == 0:
        return match
    # the recursion runs in float32 at least, outside autocast (AMP would round every step)
    dtype = torch.promote_types(match.dtype, torch.float32)
    with torch.autocast(device_type=match.device.type, enabled=False):
        out = _Eq2Recursion.apply(query.to(dtype), match.to(dtype), dmax.to(dtype).clamp(min=0))
    return out.to(match.dtype)


def generate_sequence_autograd(query: torch.Tensor, match: torch.Tensor, dmax: torch.Tensor) -> torch.Tensor:
    """The same recursion as `generate_sequence` left to autograd (benchmark/test reference)."""
    t_len = match.shape[1]
    if t_len == 0:
        return match
    dmax = dmax.clamp(min=0)
    query_norm = vector_norm(query)
    prev = match[:, 0]
    out = [prev]
    for i in range(1, t_len):
        dad = ((query[:, i] * prev).sum(-1) / (query_norm[:, i] * vector_norm(prev))).clamp(min=0)
        w = (dad / (dad + dmax[:, i] + EPS)).unsqueeze(-1)
        prev = torch.lerp(match[:, i], prev, w)
        out.append(prev)
    return torch.stack(out, 1)


def sca_generate(feats: torch.Tensor, hole: torch.Tensor, match: torch.Tensor,
                 dmax: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2.2: fill every hole position by Eq. 2; known positions pass through unchanged.

    feats, match: [B, N, C]; hole, dmax: [B, N]. Images without a known position are returned
    unchanged.
    """
    usable = (hole < 0.5).any(1)
    order, valid = hole_order(hole, usable)
    if order.shape[1] == 0:
        return feats
    c = feats.shape[-1]
    index = order.unsqueeze(-1).expand(-1, -1, c)
    seq_query, seq_match = feats.gather(1, index), match.gather(1, index)
    seq_dmax = dmax.gather(1, order)
    generated = generate_sequence(seq_query, seq_match, seq_dmax.to(seq_match.dtype))  # [B, T, C]
    b_idx = torch.arange(feats.shape[0], device=feats.device).unsqueeze(1).expand_as(order)
    return feats.index_put((b_idx[valid], order[valid]), generated[valid])


def sca_generate_loop(feats: torch.Tensor, hole: torch.Tensor, match: torch.Tensor,
                      dmax: torch.Tensor) -> torch.Tensor:
    """Reference for tests and the benchmark: Eq. 2 as a plain Python loop, one image and one
    hole patch at a time, in raster order. Same conventions as `sca_generate`."""
    rows = []
    for b in range(feats.shape[0]):
        vecs = list(feats[b].unbind(0))
        holes = [i for i in range(feats.shape[1]) if float(hole[b, i]) > 0.5]
        if len(holes) < feats.shape[1]:  # at least one known position: generate
            prev = None
            for i in holes:
                if prev is None:
                    new = match[b, i]  # m_1 = m'_1, Dad_1 = 0
                else:
                    dad = torch.clamp(cosine(feats[b, i], prev), min=0)  # Eq. 1: m_i vs m_{i-1}
                    dm = torch.clamp(dmax[b, i], min=0)
                    w = dad / (dad + dm + EPS)
                    new = w * prev + (1 - w) * match[b, i]
                vecs[i] = new
                prev = new
        rows.append(torch.stack(vecs, 0))
    return torch.stack(rows, 0)


class SemanticCoherentAttention(nn.Module):
    """SCA layer (Sec. 3.2): search then generation on a [B, C, h, w] map; no parameters."""

    def forward(self, feat: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        vecs = feat.flatten(2).transpose(1, 2)  # [B, N, C]
        hole_flat = hole.flatten(1)
        match, dmax = sca_search(vecs, hole_flat)
        out = sca_generate(vecs, hole_flat, match, dmax)
        return out.transpose(1, 2).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------
# Sec. 3.3 Cross-scale reconstruction (Eq. 3-6)
# ----------------------------------------------------------------------------------------------
def similarity(feat: torch.Tensor) -> torch.Tensor:
    """Eq. 3: cosine similarity of every pair of positions; feat [B, C, h, w] -> [B, N, N].

    All score tensors below are stored *key-major*: entry [b, k, q] belongs to key position
    k = (x', y') and query position q = (x, y) (saves transposed copies of N x N tensors).
    """
    vecs = feat.flatten(2).transpose(1, 2)
    unit = vecs / vector_norm(vecs).unsqueeze(-1)
    return unit @ unit.transpose(1, 2)


def smooth_similarity(sim: torch.Tensor, h: int, w: int, k: int) -> torch.Tensor:
    """Eq. 4: average of sim over a k x k window of *query* positions around (x, y).

    The printed index set {-k..k} would hold (2k+1)^2 terms while the divisor is k x k; we take
    the window to be k x k (k odd) with divisor k*k, zero beyond the border, as printed. Only
    the query position is shifted, as printed (the key position x', y' stays fixed).
    sim: key-major [B, N, N].
    """
    if k <= 1:
        return sim
    b, nk, nq = sim.shape
    r = k // 2
    padded = F.pad(sim.reshape(b, nk, h, w), (r, r, r, r))
    # separable k x k box sum by shifted slices (several times faster than avg_pool2d here)
    rows = sum(padded[:, :, i:i + h] for i in range(k))
    box = sum(rows[..., j:j + w] for j in range(k))
    return (box / (k * k)).reshape(b, nk, nq)


def attention_scores(sim: torch.Tensor, known: torch.Tensor, scale: float) -> torch.Tensor:
    """Scores from the smoothed similarity: softmax over the *known* key positions.

    The paper names the result "score" without the normalisation; we use a softmax with a fixed
    temperature `scale` (as in contextual attention, Yu et al. 2018) restricted to known keys,
    so the reconstruction of Eq. 6 reuses known-region features. An image with no known key
    at this level attends over all positions. sim key-major [B, N, N], known [B, N] bool;
    returns key-major scores (each query column sums to 1).
    """
    keys = known | ~known.any(1, keepdim=True)
    key_bias = torch.zeros(keys.shape, dtype=sim.dtype, device=sim.device).masked_fill_(~keys, float("-inf"))
    return torch.softmax(torch.add(key_bias.unsqueeze(-1), sim, alpha=scale), dim=1)


def upsample_scores(prev: torch.Tensor, h: int, w: int, known: torch.Tensor) -> torch.Tensor:
    """Bring the previous (deeper, half-resolution) module's scores to this module's grid.

    Eq. 5 blends scores of two modules that live on different grids; we upsample nearest in
    the query positions and split each key's weight evenly over its 2x2 children, then keep
    only known keys and renormalise each query's weights (a query with no known mass stays 0).
    prev: key-major [B, n, n] on the (h/2, w/2) grid -> key-major [B, h*w, h*w].
    """
    b = prev.shape[0]
    h2, w2 = h // 2, w // 2
    up = prev.reshape(b, h2, 1, w2, 1, h2, 1, w2, 1).expand(b, h2, 2, w2, 2, h2, 2, w2, 2).reshape(b, h * w, h * w)
    up = up * known.unsqueeze(-1).to(up.dtype)
    return up / up.sum(1, keepdim=True).clamp(min=EPS)


def reconstruct_low(score: torch.Tensor, low: torch.Tensor, low_hole: torch.Tensor) -> torch.Tensor:
    """Eq. 6: f^{j-1}_{x,y} = sum_{x',y'} score_{x,y,x',y'} f^{j-1}_{x',y'}.

    The lower-level map [B, C, fh, fw] is finer than the score grid (h, w) by s = fh/h; its
    s x s patches are the "sibling features" at each score position, and the weighted sum
    is a transposed convolution with those patches (pixel-unshuffle, matmul, pixel-shuffle).
    Known-region lower-level features pass through unchanged; holes take the reconstruction.
    score: key-major [B, N, N].
    """
    b, c, fh, fw = low.shape
    n = score.shape[1]
    s = int(round((fh * fw / n) ** 0.5))
    patches = F.pixel_unshuffle(low, s) if s > 1 else low  # [B, C*s*s, h, w]
    h, w = patches.shape[-2:]
    recon = score.transpose(1, 2) @ patches.flatten(2).transpose(1, 2)  # [B, N(query), C*s*s]
    recon = recon.transpose(1, 2).reshape(b, c * s * s, h, w)
    recon = F.pixel_shuffle(recon, s) if s > 1 else recon
    recon = recon.to(low.dtype)
    return torch.lerp(low, recon, low_hole.to(low.dtype))  # low*(1-hole) + recon*hole


class CrossScaleCoherentAttention(nn.Module):
    """One CCSA module (Sec. 3.2-3.3) joining a high-level map to the next lower level.

    forward(high, high_hole, low, low_hole, prev_score) -> (high', low', score):
      high' = SCA(high) (Sec. 3.2), score from Eq. 3-4 on high' (softmax over known keys),
      blended with the previous module's score by the trainable lambda (Eq. 5), and low' the
      reconstruction of Eq. 6. `has_prev` modules own lambda = sigmoid(theta), theta = 0 at
      start (lambda = 0.5); the deepest module has no previous score and no lambda.
    """

    def __init__(self, has_prev: bool, smooth_k: int = 3, softmax_scale: float = 10.0):
        super().__init__()
        if smooth_k % 2 != 1:
            raise ValueError(f"smooth_k must be odd, got {smooth_k}")
        self.sca = SemanticCoherentAttention()
        self.smooth_k = smooth_k
        self.softmax_scale = softmax_scale
        self.lambda_logit = nn.Parameter(torch.zeros(())) if has_prev else None

    def forward(self, high: torch.Tensor, high_hole: torch.Tensor, low: torch.Tensor,
                low_hole: torch.Tensor, prev_score: torch.Tensor | None):
        h, w = high.shape[-2:]
        high = self.sca(high, high_hole)
        known = high_hole.flatten(1) < 0.5
        sim = smooth_similarity(similarity(high), h, w, self.smooth_k)  # Eq. 3-4
        score = attention_scores(sim, known, self.softmax_scale)
        if self.lambda_logit is not None and prev_score is not None:  # Eq. 5
            lam = torch.sigmoid(self.lambda_logit)
            prev_up = upsample_scores(prev_score, h, w, known).to(score.dtype)
            score = torch.lerp(prev_up, score, lam.to(score.dtype))  # lam*s + (1-lam)*s_prev
        return high, reconstruct_low(score, low, low_hole), score  # Eq. 6
