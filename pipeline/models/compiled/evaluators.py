"""Numba evaluators of the exported models (pipeline.models.compiled.export): one row, or a batch.

Each evaluator repeats, operation for operation and in the library's precision, what its library
does at predict time, so the trees give the library's probabilities bit for bit:

- random forest (scikit-learn): the row is cast to float32 (``DTYPE``) and each tree goes left on
  ``x <= threshold`` (float32 against the float64 threshold, which is the same test as against the
  largest float32 not above it, the threshold exported); a NaN goes to the node's missing
  child (``missing_go_to_left``; for a forest fitted without NaN, the child that had more
  samples); leaves hold P(class 1); the trees' probabilities are summed in tree order from 0.0
  and divided by the number of trees, as ``RandomForestClassifier.predict_proba`` does.
- XGBoost: float32 row, left on ``x < split_condition`` (float32), a NaN to the default child; the
  margin is the float32 base margin plus the leaves, added in float32 in tree order; the
  probability is XGBoost's ``Sigmoid`` (``1 / (expf(min(-m, 88.7)) + 1)``, float32).
- logistic regression: ``sigmoid(sum((x - mean) / scale * coef) + intercept)`` in float64 (the
  sum's order differs from BLAS by a few ulps of 1e-16); NaN propagates to the probability.
- LSTM (torch): float32 throughout, from a zero state over the window's standardised rows (gate
  order i, f, g, o). Not bit for bit: torch runs oneDNN's LSTM kernel (its own summation order and
  activations), and the gates here use vectorisable float32 exp/tanh within 3 ulps. The raw
  probability stays within ~2 float32 ulps of torch's (1.2e-7), as close as torch's oneDNN and
  native CPU paths are to each other; an isotonic calibration magnifies that by its steepest
  slope (knots a hair apart), to ~1e-5 at worst in the tests.
- calibration: ``Calibrator`` -- numpy's ``interp`` (isotonic) or Platt's sigmoid, then the clip
  to ``[PROBA_FLOOR, 1 - PROBA_FLOOR]``; NaN stays NaN.

A calibration is one float64 array: ``[method, a, b, n, knots_x[n], knots_y[n]]`` (method 0 none,
1 isotonic, 2 platt). The LSTM's per-tick path keeps a ring of the last ``window`` rows' layer-0
input projections (``W_ih x + b_ih``: what torch computes first for each row, and the same for
every window the row is in) and a scratch area in one float32 array, so a tick allocates nothing;
with the state carried (``lstm_carried_proba``) the same array holds h and c between ticks and one
row's projection. The trees' per-tick walks and batches are in ``walks``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.models.base import PROBA_FLOOR
from pipeline.models.compiled.intrinsics import float32_from_bits, fma32

CAL_NONE, CAL_ISOTONIC, CAL_PLATT = 0, 1, 2
# The int32 node table of both tree kinds, [nodes, 2], 8 bytes a node (the walk is bound by memory):
# LEFT, the left child's row (the right child is the next row; -1 at a leaf), and SPLIT,
# ``feature << 1 | 1 if a NaN goes right`` (-1 at a leaf).
LEFT, SPLIT = 0, 1
# The LSTM ring's int64 state: where the next row goes (= the oldest row), rows pushed so far, window.
RING_NEXT, RING_ROWS, RING_WINDOW = 0, 1, 2

# error_model="numpy": a float division by zero gives inf/NaN as in numpy (the libraries' semantics)
# instead of raising, and leaves no branch in the loops (a branch stops LLVM from vectorising them).
# fastmath "contract" lets LLVM fuse a * b + c into one FMA in the LSTM's float32 matrix-vector
# products (faster, and as exact as torch's own FMA kernels); never used on the trees' paths.
_LSTM_MATH = {"contract"}


# -- calibration ---------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _interp(x, xp, fp):
    """numpy's ``interp`` (numpy/_core/src/multiarray/compiled_base.c) for one value, bit for bit."""
    n = xp.shape[0]
    if x != x:
        return x
    if n == 1:
        return fp[0]  # below, above or at the one knot, numpy returns fp[0] (left = right = fp[0])
    if x < xp[0]:
        return fp[0]
    if x > xp[n - 1]:
        return fp[n - 1]
    lo, hi = 0, n - 1  # the last j with xp[j] <= x
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xp[mid] <= x:
            lo = mid
        else:
            hi = mid
    j = hi if xp[hi] <= x else lo
    if j == n - 1 or xp[j] == x:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    y = slope * (x - xp[j]) + fp[j]
    if y != y:
        y = slope * (x - xp[j + 1]) + fp[j + 1]
        if y != y and fp[j] == fp[j + 1]:
            y = fp[j]
    return y


@njit(cache=True, error_model="numpy")
def _sigmoid(z):
    return 0.5 * (1.0 + math.tanh(0.5 * z))  # pipeline.models.base._sigmoid


@njit(cache=True, error_model="numpy")
def _logit(p):
    p = min(max(p, 1e-12), 1.0 - 1e-12)  # pipeline.models.base._logit (NaN passes through)
    return math.log(p) - math.log1p(-p)


@njit(cache=True, error_model="numpy")
def calibrate(calibration, p):
    """``Calibrator.__call__`` for one raw probability."""
    method = int(calibration[0])
    if method == CAL_NONE:
        return p
    if method == CAL_ISOTONIC:
        n = int(calibration[3])
        q = _interp(p, calibration[4:4 + n], calibration[4 + n:4 + 2 * n])
    else:
        q = _sigmoid(calibration[1] * _logit(p) + calibration[2])
    if q < PROBA_FLOOR:  # np.clip; a NaN fails both tests and stays NaN
        return PROBA_FLOOR
    if q > 1.0 - PROBA_FLOOR:
        return 1.0 - PROBA_FLOOR
    return q


# -- logistic regression -------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def logistic_raw(mean, scale, coef, intercept, x):
    z = 0.0
    for j in range(coef.shape[0]):
        z += (x[j] - mean[j]) / scale[j] * coef[j]
    return _sigmoid(z + intercept[0])


@njit(cache=True, error_model="numpy")
def logistic_proba(mean, scale, coef, intercept, calibration, x):
    return calibrate(calibration, logistic_raw(mean, scale, coef, intercept, x))


# -- random forest (scikit-learn) ----------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def forest_leaf(nodes, thresholds, node, x):
    """The leaf row x reaches from ``node``: scikit-learn's ``_apply_dense``, left on ``x <= t``."""
    while True:
        n = np.uint64(node)  # unsigned: no negative-index wrap-around test on each load
        left = nodes[n, LEFT]
        if left < 0:
            return node
        split = nodes[n, SPLIT]
        v = np.float32(x[np.uint64(split >> 1)])
        step = left + np.int32(not (v <= thresholds[n]))
        node = left + (split & 1) if v != v else step  # selects, no branch to mispredict


@njit(cache=True, error_model="numpy")
def forest_raw(nodes, thresholds, leaf_values, roots, x):
    total = 0.0
    for t in range(roots.shape[0]):
        total += leaf_values[forest_leaf(nodes, thresholds, roots[t], x)]
    return total / roots.shape[0]


@njit(cache=True, error_model="numpy")
def forest_proba(nodes, thresholds, leaf_values, roots, calibration, x):
    return calibrate(calibration, forest_raw(nodes, thresholds, leaf_values, roots, x))


# -- XGBoost -------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def xgb_leaf(nodes, values, node, x):
    """The leaf row x reaches from ``node``: XGBoost's ``GetNextNode``, ``left + !(x < t)``, NaN to
    the default child."""
    while True:
        n = np.uint64(node)
        left = nodes[n, LEFT]
        if left < 0:
            return node
        split = nodes[n, SPLIT]
        v = np.float32(x[np.uint64(split >> 1)])
        step = left + np.int32(not (v < values[n]))
        node = left + (split & 1) if v != v else step


@njit(cache=True, error_model="numpy")
def xgb_margin(nodes, values, roots, base_margin, x):
    margin = base_margin[0]
    for t in range(roots.shape[0]):
        margin = margin + values[xgb_leaf(nodes, values, roots[t], x)]  # float32 + float32, tree order
    return margin


@njit(cache=True, error_model="numpy")
def xgb_sigmoid(margin):
    """xgboost/src/common/math.h ``Sigmoid(float)``: float32, glibc's expf (as numba's exp on float32)."""
    m = min(-margin, np.float32(88.7))
    return np.float32(1.0) / (np.exp(m) + np.float32(1.0) + np.float32(1e-16))


@njit(cache=True, error_model="numpy")
def xgb_prob_to_margin(base_score):
    """XGBoost's logistic ``ProbToMargin`` of the saved ``base_score``: ``-logf(1.0f / b - 1.0f)``."""
    return -np.log(np.float32(1.0) / base_score - np.float32(1.0))


@njit(cache=True, error_model="numpy")
def xgb_raw(nodes, values, roots, base_margin, x):
    return np.float64(xgb_sigmoid(xgb_margin(nodes, values, roots, base_margin, x)))


@njit(cache=True, error_model="numpy")
def xgb_proba(nodes, values, roots, base_margin, calibration, x):
    return calibrate(calibration, xgb_raw(nodes, values, roots, base_margin, x))


# -- LSTM (torch) --------------------------------------------------------------------------------
# The gates' activations are plain float32 arithmetic (no libm call), so that LLVM vectorises the
# loop over a layer's units: with glibc's expf/tanhf, 5 x hidden calls per step were ~80 % of a
# window's cost. They stay within 3 ulps of the exact function on a dense grid (the tests check).

_ONE, _HALF, _TWO = np.float32(1.0), np.float32(0.5), np.float32(2.0)
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # Cody-Waite split: n * hi is exact
_EXP_LO, _EXP_HI = np.float32(-87.0), np.float32(88.0)  # 2**n stays a normal float32
# exp(r) on |r| <= ln2 / 2: Taylor to r**7 (truncation < 1e-8 relative)
_E2, _E3, _E4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
_E5, _E6, _E7 = np.float32(1 / 120), np.float32(1 / 720), np.float32(1 / 5040)
# tanh(x) / x as a polynomial in x**2 on |x| < 0.625 (least squares on Chebyshev nodes, 6e-10 relative)
_TANH_SMALL = np.float32(0.625)
_T1, _T2, _T3 = np.float32(-0.3333333432674408), np.float32(0.13333304226398468), np.float32(-0.05395938456058502)
_T4, _T5, _T6 = np.float32(0.02176983468234539), np.float32(-0.00834665633738041), np.float32(0.0022955394815653563)
_TANH_BIG = np.float32(10.0)  # tanh(10) rounds to 1.0 in float32


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def exp32(x):
    """e**x in float32 by range reduction (x = n ln2 + r) and a polynomial; NaN stays NaN."""
    xc = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(xc * _LOG2E + _HALF)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = _ONE + r * (_ONE + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    y = p * float32_from_bits((np.int64(n) + 127) << 23)
    return y if x == x else x


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def sigmoid32(x):
    return _ONE / (_ONE + exp32(-x))


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def tanh32(x):
    a = min(abs(x), _TANH_BIG)
    s = a * a
    small = a * (_ONE + s * (_T1 + s * (_T2 + s * (_T3 + s * (_T4 + s * (_T5 + s * _T6))))))
    big = _ONE - _TWO / (exp32(_TWO * a) + _ONE)
    t = small if a < _TANH_SMALL else big
    t = t if x >= 0 else -t
    return t if x == x else x


@njit(cache=True, error_model="numpy")
def _sigmoid32(z):
    """torch.sigmoid of the head's float32 logit (one call per window: libm's expf)."""
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-z))


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def _add_rows(out, w, j, a, b, c, d):
    """``out += a w[j]; out += b w[j+1]; ...``: four input rows per pass over ``out`` (a pass loads
    and stores all of ``out``; one pass per row made the products ~1.5x slower), each product
    added with one explicit FMA, in row order."""
    for u in range(out.shape[0]):
        out[u] = fma32(d, w[j + 3, u], fma32(c, w[j + 2, u], fma32(b, w[j + 1, u], fma32(a, w[j, u], out[u]))))


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def _add_row(out, w, j, a):
    for u in range(out.shape[0]):
        out[u] = fma32(a, w[j, u], out[u])


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def _standardised(x, mean, std, j):
    return np.float32((x[j] - mean[j]) / std[j])


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH)
def lstm_project(mean, std, w_ih0, b_ih0, x, out):
    """``out = W_ih0 @ standardised(x) + b_ih0`` (float32 [4H]); standardised as ``LSTMModel._windows``:
    ``(x - mean) / std`` in float64, then rounded to float32."""
    n = w_ih0.shape[0]
    out[:] = 0.0
    for j in range(0, n - n % 4, 4):
        _add_rows(out, w_ih0, j, _standardised(x, mean, std, j), _standardised(x, mean, std, j + 1),
                  _standardised(x, mean, std, j + 2), _standardised(x, mean, std, j + 3))  # fmt: skip
    for j in range(n - n % 4, n):
        _add_row(out, w_ih0, j, _standardised(x, mean, std, j))
    for u in range(out.shape[0]):
        out[u] += b_ih0[u]


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def _matvec_add(vec, w, out):
    """``out += vec @ w`` (w ``[len(vec), len(out)]``), four rows per pass."""
    n = vec.shape[0]
    for j in range(0, n - n % 4, 4):
        _add_rows(out, w, j, vec[j], vec[j + 1], vec[j + 2], vec[j + 3])
    for j in range(n - n % 4, n):
        _add_row(out, w, j, vec[j])


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def lstm_upper_input(below, w_ih, b_ih, out):
    """A layer above the first: its input projection ``below @ w_ih + b_ih`` (into ``out``), in the
    order the window and the carried evaluators both sum it."""
    out[:] = 0.0
    _matvec_add(below, w_ih, out)
    for u in range(out.shape[0]):
        out[u] += b_ih[u]


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH)
def lstm_cell(inputs, w_hh, b_hh, h, c, gates, from_zero):
    """One step of ``nn.LSTM``'s cell: ``gates = (W_hh h + b_hh) + inputs`` (inputs = ``W_ih x + b_ih``),
    gate order i, f, g, o; updates ``h`` and ``c`` in place. ``from_zero``: h is all zeros, so
    ``W_hh h`` is exactly zero and skipped."""
    hidden = h.shape[0]
    n = gates.shape[0]
    if from_zero:
        for u in range(n):
            gates[u] = b_hh[u] + inputs[u]
    else:
        gates[:] = 0.0
        _matvec_add(h, w_hh, gates)
        for u in range(n):
            gates[u] = (gates[u] + b_hh[u]) + inputs[u]
    for u in range(hidden):
        i = sigmoid32(gates[u])
        f = sigmoid32(gates[hidden + u])
        g = tanh32(gates[2 * hidden + u])
        o = sigmoid32(gates[3 * hidden + u])
        c[u] = f * c[u] + i * g
        h[u] = o * tanh32(c[u])


@njit(cache=True, error_model="numpy")
def new_lstm_ring(window, hidden, layers):
    """An empty ring (float32: the window's projections, then h and c per layer and two gate rows of
    scratch) and its state (int64 ``[next, rows, window]``)."""
    ring = np.zeros(window * 4 * hidden + 2 * layers * hidden + 2 * 4 * hidden, dtype=np.float32)
    return ring, np.array([0, 0, window], dtype=np.int64)


@njit(cache=True, error_model="numpy")
def lstm_push(mean, std, w_ih0, b_ih0, ring, state, x):
    """Add row ``x`` to the ring: the first row fills every slot (the left padding with the first row
    that ``LSTMModel._windows`` does), later rows replace the oldest."""
    gates = b_ih0.shape[0]
    window = int(state[RING_WINDOW])
    slot = int(state[RING_NEXT])
    lstm_project(mean, std, w_ih0, b_ih0, x, ring[slot * gates:(slot + 1) * gates])
    if state[RING_ROWS] == 0:
        for s in range(1, window):
            ring[s * gates:(s + 1) * gates] = ring[:gates]
        slot = window - 1
    state[RING_NEXT] = (slot + 1) % window
    state[RING_ROWS] += 1


@njit(cache=True, error_model="numpy", inline="always")
def _ring_scratch(ring, window, layers, hidden, gates):
    """The ring's areas after its ``window`` rows: h and c of every layer, then two gate rows of
    scratch (the cell's work, an upper layer's input projection)."""
    at = window * gates
    hc = at + 2 * layers * hidden
    return ring[at:at + layers * hidden], ring[at + layers * hidden:hc], ring[hc:hc + gates], ring[hc + gates:hc + 2 * gates]


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH, inline="always")
def _head_proba(top, head_w, head_b, calibration):
    """The calibrated probability of the linear head on the top layer's h (float32, torch's order)."""
    logit = np.float32(0.0)
    for u in range(top.shape[0]):
        logit += top[u] * head_w[u]
    logit = logit + head_b[0]
    return calibrate(calibration, np.float64(_sigmoid32(logit)))


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH)
def lstm_window_proba(w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, ring, state):
    """The calibrated probability of the ring's window (oldest to newest) from a zero state: what
    ``LSTMModel.predict_proba`` gives for its newest row. Cost: ``window x layers`` cell steps."""
    layers, hidden, gates = w_hh.shape[0], w_hh.shape[1], w_hh.shape[2]
    window = int(state[RING_WINDOW])
    hs, cs, work, inputs = _ring_scratch(ring, window, layers, hidden, gates)
    hs[:] = 0.0
    cs[:] = 0.0
    oldest = int(state[RING_NEXT])
    for t in range(window):
        slot = (oldest + t) % window
        for layer in range(layers):
            h = hs[layer * hidden:(layer + 1) * hidden]
            c = cs[layer * hidden:(layer + 1) * hidden]
            if layer == 0:
                x_proj = ring[slot * gates:(slot + 1) * gates]
            else:
                lstm_upper_input(hs[(layer - 1) * hidden:layer * hidden], w_ih_upper[layer - 1], b_ih[layer], inputs)
                x_proj = inputs
            lstm_cell(x_proj, w_hh[layer], b_hh[layer], h, c, work, t == 0)
    return _head_proba(hs[(layers - 1) * hidden:layers * hidden], head_w, head_b, calibration)


@njit(cache=True, error_model="numpy", fastmath=_LSTM_MATH)
def lstm_carried_proba(mean, std, w_ih0, w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, ring, state, x):
    """The carried-state LSTM (``LSTMModel`` with ``state="carried"``): one step per row, h and c kept
    in the ring from the stream's first row; the calibrated probability of the head on the top h.
    A row with a NaN or infinite feature gives NaN and leaves h and c as they were (the model's
    definition: such a row is not part of the sequence). Cost: ``layers`` cell steps."""
    for j in range(x.shape[0]):
        if not math.isfinite(x[j]):
            return math.nan
    layers, hidden, gates = w_hh.shape[0], w_hh.shape[1], w_hh.shape[2]
    hs, cs, work, inputs = _ring_scratch(ring, int(state[RING_WINDOW]), layers, hidden, gates)
    x_proj = ring[:gates]
    lstm_project(mean, std, w_ih0, b_ih[0], x, x_proj)
    first = state[RING_ROWS] == 0
    if first:
        hs[:] = 0.0
        cs[:] = 0.0
    for layer in range(layers):
        h = hs[layer * hidden:(layer + 1) * hidden]
        c = cs[layer * hidden:(layer + 1) * hidden]
        if layer == 0:
            lstm_cell(x_proj, w_hh[layer], b_hh[layer], h, c, work, first)
        else:
            lstm_upper_input(hs[(layer - 1) * hidden:layer * hidden], w_ih_upper[layer - 1], b_ih[layer], inputs)
            lstm_cell(inputs, w_hh[layer], b_hh[layer], h, c, work, first)
    state[RING_ROWS] += 1
    return _head_proba(hs[(layers - 1) * hidden:layers * hidden], head_w, head_b, calibration)


# -- batches (the backtester: every row of a matrix, rows in time order) --------------------------

@njit(cache=True, error_model="numpy")
def logistic_proba_batch(mean, scale, coef, intercept, calibration, X):
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        out[i] = logistic_proba(mean, scale, coef, intercept, calibration, X[i])
    return out


@njit(cache=True, error_model="numpy")
def lstm_proba_batch(mean, std, w_ih0, w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, window, X):
    """Row i reads rows i - window + 1 .. i of X, the first row repeated before the start."""
    ring, state = new_lstm_ring(window, w_hh.shape[1], w_hh.shape[0])
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        lstm_push(mean, std, w_ih0, b_ih[0], ring, state, X[i])
        out[i] = lstm_window_proba(w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, ring, state)
    return out


@njit(cache=True, error_model="numpy")
def lstm_carried_proba_batch(mean, std, w_ih0, w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration, X):
    """Row i after rows 0 .. i-1 (their finite ones) with the state carried: ``lstm_carried_proba``'s."""
    ring, state = new_lstm_ring(1, w_hh.shape[1], w_hh.shape[0])
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        out[i] = lstm_carried_proba(mean, std, w_ih0, w_ih_upper, w_hh, b_ih, b_hh, head_w, head_b, calibration,
                                    ring, state, X[i])
    return out
