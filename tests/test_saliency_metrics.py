"""MIT saliency metrics: hand-worked cases, defining properties, a literal transcription of
the MATLAB code, the expected value of the sampled AUCs, NaN conventions, and the jnp KLD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimic_jax.evaluation import saliency_metrics as sm

EPS = np.finfo(np.float64).eps


@pytest.fixture
def maps():
  rng = np.random.default_rng(0)
  s = rng.random((24, 20))
  g = np.exp(-((np.arange(24)[:, None] - 8) ** 2 + (np.arange(20)[None] - 12) ** 2) / 30.0)
  f = np.zeros((24, 20))
  f[rng.integers(0, 24, 15), rng.integers(0, 20, 15)] = 1
  return s, g, f


def test_kld_hand_worked_and_properties():
  s = np.array([[1.0, 3.0], [0.0, 0.0]])
  g = np.array([[1.0, 1.0], [0.0, 2.0]])
  p, q = s / 4, g / 4
  expected = sum(q.ravel()[i] * np.log(EPS + q.ravel()[i] / (p.ravel()[i] + EPS)) for i in range(4))
  # by hand: .25 ln(.25/.25) + .25 ln(.25/.75) + 0 + .5 ln(eps + .5/eps)
  assert sm.kld(s, g) == pytest.approx(expected, abs=1e-12)
  assert sm.kld(s, g) == pytest.approx(
    0.25 * np.log(1 / 3) + 0.5 * np.log(EPS + 0.5 / EPS), abs=1e-9
  )
  assert sm.kld(g, g) == pytest.approx(0.0, abs=1e-12)
  assert sm.kld(3 * g, g) == pytest.approx(0.0, abs=1e-15)  # scale-free


def test_nss_of_the_fixation_map_itself():
  f = np.zeros((10, 10))
  f[2, 3] = f[7, 7] = f[5, 1] = 1
  n, k = 100, 3
  p = k / n
  std = np.sqrt((k * (1 - p) ** 2 + (n - k) * p**2) / (n - 1))
  assert sm.nss(f, f) == pytest.approx((1 - p) / std, abs=1e-12)
  counts = f.copy()
  counts[2, 3] = 5  # repeated fixations on one pixel count once
  assert sm.nss(f, counts) == pytest.approx(sm.nss(f, f), abs=1e-12)


def test_cc_symmetric_and_affine_invariant(maps):
  s, g, _ = maps
  assert sm.cc(s, g) == pytest.approx(sm.cc(g, s), abs=1e-12)
  assert sm.cc(3.5 * s - 2.0, 0.1 * g + 7) == pytest.approx(sm.cc(s, g), abs=1e-12)
  assert sm.cc(s, g) == pytest.approx(np.corrcoef(s.ravel(), g.ravel())[0, 1], abs=1e-12)
  assert sm.cc(g, g) == pytest.approx(1.0, abs=1e-12)


def test_sim_hand_worked():
  s = np.array([[0.0, 1.0], [2.0, 3.0]])  # min-max -> [0, 1/3, 2/3, 1] / 2
  g = np.array([[3.0, 2.0], [1.0, 0.0]])
  s_n = np.array([0, 1 / 3, 2 / 3, 1]) / 2
  g_n = np.array([1, 2 / 3, 1 / 3, 0]) / 2
  assert sm.sim(s, g) == pytest.approx(np.minimum(s_n, g_n).sum(), abs=1e-12)
  assert sm.sim(g, g) == pytest.approx(1.0, abs=1e-12)


def _matlab_auc_judd(sal, fix):
  """Line-by-line transcription of AUC_Judd.m with jitter=0."""
  s = (sal - sal.min()) / (sal.max() - sal.min())
  S, F = s.ravel(order='F'), fix.ravel(order='F')
  sth = S[F > 0]
  n_fix, n_pix = len(sth), len(S)
  allthreshes = np.sort(sth)[::-1]
  tp = np.zeros(n_fix + 2)
  fp = np.zeros(n_fix + 2)
  tp[-1] = fp[-1] = 1
  for i in range(n_fix):
    thresh = allthreshes[i]
    aboveth = np.sum(S >= thresh)
    tp[i + 1] = (i + 1) / n_fix
    fp[i + 1] = (aboveth - (i + 1)) / (n_pix - n_fix)
  return np.trapezoid(tp, fp)


def test_auc_judd_against_matlab_transcription_and_extremes(maps):
  s, _, f = maps
  assert sm.auc_judd(s, f) == pytest.approx(_matlab_auc_judd(s, f), abs=1e-12)
  perfect = f + 0.01 * np.random.default_rng(1).random(f.shape)
  assert sm.auc_judd(perfect, f) == pytest.approx(1.0, abs=1e-12)
  # Inverted: fp jumps to 1 at the first threshold, leaving one half-step of 1 / n_fix.
  assert sm.auc_judd(-perfect, f) == pytest.approx(0.5 / (f != 0).sum(), abs=1e-12)


class _Matlab:
  """Line-by-line float64 transcriptions of the benchmark's MATLAB metrics
  (cvzoya/saliency/code_forMetrics: KLdiv.m, NSS.m, CC.m, similarity.m, InfoGain.m), for maps
  already on the same grid (no imresize): an independent computation to check ours against."""

  @staticmethod
  def kld(saliency_map, fixation_map):
    map1, map2 = saliency_map.astype(float), fixation_map.astype(float)
    if np.any(map1):
      map1 = map1 / np.sum(map1)
    if np.any(map2):
      map2 = map2 / np.sum(map2)
    return np.sum(map2 * np.log(EPS + map2 / (map1 + EPS)))

  @staticmethod
  def nss(saliency_map, fixation_map):
    m = saliency_map.astype(float)
    m = (m - np.mean(m)) / np.std(m, ddof=1)  # MATLAB's std: N - 1
    return np.mean(m[fixation_map.astype(bool)])

  @staticmethod
  def cc(saliency_map1, saliency_map2):
    def z(m):
      return (m - np.mean(m)) / np.std(m, ddof=1)

    a, b = z(saliency_map1.astype(float)), z(saliency_map2.astype(float))
    # corr2(A, B)
    a, b = a - a.mean(), b - b.mean()
    return np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))

  @staticmethod
  def similarity(saliency_map1, saliency_map2):
    out = []
    for m in (saliency_map1.astype(float), saliency_map2.astype(float)):
      if np.any(m):
        m = (m - m.min()) / (m.max() - m.min())
        m = m / np.sum(m)
      out.append(m)
    return np.sum(np.minimum(*out))

  @staticmethod
  def info_gain(saliency_map, fixation_map, baseline_map):
    map1 = saliency_map.ravel(order='F').astype(float)
    mapb = baseline_map.ravel(order='F').astype(float)
    map1 = (map1 - map1.min()) / (map1.max() - map1.min())
    mapb = (mapb - mapb.min()) / (mapb.max() - mapb.min())
    map1, mapb = map1 / map1.sum(), mapb / mapb.sum()
    locs = fixation_map.ravel(order='F').astype(bool)
    return np.mean(np.log2(EPS + map1[locs]) - np.log2(EPS + mapb[locs]))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_metrics_against_a_matlab_transcription(seed):
  """KLD, NSS, CC, SIM and IG against the transcriptions of the MATLAB code, on random maps
  (skewed, with exact zeros) and random fixations."""
  rng = np.random.default_rng(seed)
  s = rng.random((17, 23)) ** 3 * (rng.random((17, 23)) > 0.2)
  g = rng.random((17, 23)) ** 2
  f = (rng.random((17, 23)) > 0.9).astype(np.uint8)
  b = rng.random((17, 23))
  assert sm.kld(s, g) == pytest.approx(_Matlab.kld(s, g), rel=1e-12)
  assert sm.nss(s, f) == pytest.approx(_Matlab.nss(s, f), rel=1e-12)
  assert sm.cc(s, g) == pytest.approx(_Matlab.cc(s, g), rel=1e-12)
  assert sm.sim(s, g) == pytest.approx(_Matlab.similarity(s, g), rel=1e-12)
  assert sm.information_gain(s, f, b) == pytest.approx(_Matlab.info_gain(s, f, b), rel=1e-12)


def _expected_borji(sal, fix, step=0.1, negatives=None):
  """The expectation of the sampled AUC (saliency-metrics.md section 2.6)."""
  s = ((sal - sal.min()) / (sal.max() - sal.min())).ravel()
  sth = s[fix.ravel() != 0]
  neg = s if negatives is None else s[negatives.ravel() != 0]
  th = (np.arange(int(np.floor(max(sth.max(), neg.max()) / step + 1e-10)) + 1) * step)[::-1]
  tp = np.concatenate([[0], [(sth >= t).mean() for t in th], [1]])
  fp = np.concatenate([[0], [(neg >= t).mean() for t in th], [1]])
  return np.trapezoid(tp, fp)


def test_sampled_aucs_within_their_sampling_error(maps):
  s, _, f = maps
  expected = _expected_borji(s, f)
  got = sm.auc_borji(s, f, n_splits=2000, seed=3)
  assert got == pytest.approx(expected, abs=3 * 0.05 / np.sqrt(2000))
  other = np.zeros_like(f)
  other[::3, ::2] = 1
  exp_sh = _expected_borji(s, f, negatives=other)
  assert sm.auc_shuffled(s, f, other, n_splits=2000, seed=4) == pytest.approx(
    exp_sh, abs=3 * 0.05 / np.sqrt(2000)
  )
  assert sm.auc_borji(s, f) == sm.auc_borji(s, f)  # seeded: deterministic


def test_information_gain_hand_worked():
  s = np.array([[0.0, 1.0], [3.0, 4.0]])
  b = np.ones((2, 2)) + np.array([[0, 0], [0, 1e-9]])
  f = np.array([[0, 1], [1, 0]])
  sn = np.array([[0, 1], [3, 4]]) / 8
  bn = (b - b.min()) / (b.max() - b.min())
  bn = bn / bn.sum()
  expected = np.mean(
    [
      np.log2(EPS + sn[0, 1]) - np.log2(EPS + bn[0, 1]),
      np.log2(EPS + sn[1, 0]) - np.log2(EPS + bn[1, 0]),
    ]
  )
  assert sm.information_gain(s, f, b) == pytest.approx(expected, abs=1e-9)


def test_nan_conventions(maps):
  _, g, f = maps
  flat = np.full_like(g, 0.3)
  for fn, args in [
    (sm.nss, (flat, f)),
    (sm.cc, (flat, g)),
    (sm.cc, (g, flat)),
    (sm.sim, (flat, g)),
    (sm.auc_judd, (flat, f)),
    (sm.auc_borji, (flat, f)),
    (sm.information_gain, (flat, f, g)),
    (sm.nss, (g, np.zeros_like(f))),
  ]:
    assert np.isnan(fn(*args)), fn.__name__
  assert np.isfinite(sm.kld(flat, g))  # KLD is defined for a constant map


def test_resize_to_gaze_grid(maps):
  s, g, f = maps
  small = s[::2, ::2]
  up = sm.resize_to(small, g.shape)
  assert up.shape == g.shape
  assert sm.kld(small, g) == pytest.approx(sm.kld(up, g), abs=1e-12)
  assert sm.nss(small, f) == pytest.approx(sm.nss(up, f), abs=1e-12)


def test_jnp_kld_of_a_batch_agrees_with_float64(maps):
  """The training loss's KLD (``xp=jnp``, float32, batched, jit) against the float64 metric."""
  s, g, _ = maps
  rng = np.random.default_rng(5)
  ss = np.stack([s, rng.random(s.shape) ** 3, g + 0.1 * rng.random(g.shape)])
  gs = np.stack([g, g[::-1], rng.random(g.shape)])
  got = np.asarray(
    jax.jit(lambda a, b: sm.kld(a, b, xp=jnp))(
      jnp.asarray(ss, jnp.float32), jnp.asarray(gs, jnp.float32)
    )
  )
  ref = np.array([sm.kld(a, b) for a, b in zip(ss, gs)])
  np.testing.assert_allclose(got, ref, rtol=1e-4)
