// The kernel's computations (see alchemical_ops.cpp), compiled once per
// instruction set: kernel_baseline.cpp and kernel_x86_64_v3.cpp include this
// file with ALCHEM_KERNEL_VARIANT naming the namespace of their build, and
// compiler flags that set the vector width (GCC vector extensions, VECTOR_BYTES).
#include <ATen/Parallel.h>

#include "kernel_common.h"

#ifndef ALCHEM_KERNEL_VARIANT
#error "define ALCHEM_KERNEL_VARIANT before including kernel.h"
#endif

namespace alchem_ops {
namespace ALCHEM_KERNEL_VARIANT {

// F_l^m of sphericart's real harmonics, packed l (l + 1) / 2 + m; m = 0 divided by
// sqrt(2) (harmonics.py, `factors`)
template <typename T> std::vector<T> harmonics_factors(int64_t max_angular)
{
  std::vector<T> factors;
  for (int64_t l = 0; l <= max_angular; l++) {
    for (int64_t m = 0; m <= l; m++) {
      double ratio = 1.0;    // (l - m)! / (l + m)!
      for (int64_t f = l - m + 1; f <= l + m; f++) ratio /= static_cast<double>(f);
      double value = ((m % 2 == 0) ? 1.0 : -1.0) * std::sqrt((2 * l + 1) / (2 * M_PI) * ratio);
      if (m == 0) value /= std::sqrt(2.0);
      factors.push_back(static_cast<T>(value));
    }
  }
  return factors;
}

inline int64_t packed(int64_t l, int64_t m)
{
  return l * (l + 1) / 2 + m;
}

// (2l - 1) / (l - m) and (l + m - 1) / (l - m) of the recurrence, packed (m <= l - 2)
template <typename T> std::vector<T> recurrence_coefficients(int64_t max_angular, bool first)
{
  std::vector<T> values(packed(max_angular + 1, 0), T(0));
  for (int64_t l = 2; l <= max_angular; l++) {
    for (int64_t m = 0; m + 2 <= l; m++) {
      double value = first ? (2.0 * l - 1.0) / (l - m) : (l + m - 1.0) / (l - m);
      values[packed(l, m)] = static_cast<T>(value);
    }
  }
  return values;
}

// GCC vector extensions, one hardware register wide: 32 bytes where the build
// has AVX (kernel_x86_64_v3.cpp), else 16 (SSE2, NEON)
#ifdef __AVX__
constexpr int64_t VECTOR_BYTES = 32;
#else
constexpr int64_t VECTOR_BYTES = 16;
#endif

template <typename T> constexpr int64_t lanes()
{
  return VECTOR_BYTES / static_cast<int64_t>(sizeof(T));
}

template <typename T> struct Vector {
  typedef T type __attribute__((vector_size(VECTOR_BYTES)));
  typedef T unaligned __attribute__((vector_size(VECTOR_BYTES), aligned(sizeof(T))));
};

// Spherical harmonics of lanes<T>() edges at once, one edge per vector lane:
// Q_l^m (packed), c_m + i s_m = (x + i y)^m and Y_lm (index l^2 + l + m) at the
// unit vectors (x, y, z), with sphericart's recurrence.
template <typename T> struct HarmonicsBatch {
  using V = typename Vector<T>::type;
  using U = typename Vector<T>::unaligned;
  int64_t L;
  const T *factors;
  const T *a, *b;    // (2l - 1) / (l - m) and (l + m - 1) / (l - m), packed
  int64_t n_q;       // values of q per batch; c and s hold L + 1 each

  HarmonicsBatch(int64_t max_angular, const T *f, const T *ca, const T *cb) :
      L(max_angular), factors(f), a(ca), b(cb), n_q(packed(max_angular + 1, 0))
  {
  }

  // Y_lm to out[(l^2 + l + m) ld + lane]; q, c, s kept for `backward`
  // (x, y, z: lanes<T>() values each)
  void compute(const T *ux, const T *uy, const T *uz, U *__restrict q, U *__restrict c,
               U *__restrict s, T *__restrict out, int64_t ld) const
  {
    V x = *reinterpret_cast<const U *>(ux), yy = *reinterpret_cast<const U *>(uy);
    V z = *reinterpret_cast<const U *>(uz);
    c[0] = V{} + T(1);
    s[0] = V{};
    for (int64_t m = 1; m <= L; m++) {
      c[m] = x * c[m - 1] - yy * s[m - 1];
      s[m] = x * s[m - 1] + yy * c[m - 1];
    }
    q[0] = V{} + T(1);
    for (int64_t l = 1; l <= L; l++) {
      U *ql = q + packed(l, 0);
      const U *q1 = q + packed(l - 1, 0);
      const U *q2 = l >= 2 ? q + packed(l - 2, 0) : nullptr;
      const T *al = a + packed(l, 0);
      const T *bl = b + packed(l, 0);
      ql[l] = -static_cast<T>(2 * l - 1) * q1[l - 1];
      ql[l - 1] = -z * ql[l];
      for (int64_t m = 0; m + 2 <= l; m++) ql[m] = al[m] * z * q1[m] - bl[m] * q2[m];
    }
    for (int64_t l = 0; l <= L; l++) {
      T *yl = out + (l * l + l) * ld;
      const T *fl = factors + packed(l, 0);
      const U *ql = q + packed(l, 0);
      *reinterpret_cast<U *>(yl) = fl[0] * ql[0];
      for (int64_t m = 1; m <= l; m++) {
        V fq = fl[m] * ql[m];
        *reinterpret_cast<U *>(yl + m * ld) = fq * c[m];
        *reinterpret_cast<U *>(yl - m * ld) = fq * s[m];
      }
    }
  }

  // d/dv of sum_lm g_lm Y_lm(v / |v|) at v = r u, from the values of `compute`:
  // with S_lm the solid harmonics (homogeneous of degree l, Y_lm(u) = S_lm(u)),
  // grad Y_lm(v) = (grad S_lm(u) - l Y_lm(u) u) / r, and sphericart's identities
  // dQ_l^m/dx = x Q_{l-1}^{m+1}, dQ_l^m/dy = y Q_{l-1}^{m+1},
  // dQ_l^m/dz = (l + m) Q_{l-1}^m, d(c_m, s_m)/dx = m (c_{m-1}, s_{m-1}),
  // d(c_m, s_m)/dy = m (-s_{m-1}, c_{m-1}).
  void backward(const U *__restrict g, const T *ux, const T *uy, const T *uz, const T *length,
                const U *__restrict q, const U *__restrict c, const U *__restrict s,
                U *__restrict gradient) const
  {
    V x = *reinterpret_cast<const U *>(ux), yy = *reinterpret_cast<const U *>(uy);
    V z = *reinterpret_cast<const U *>(uz), r = *reinterpret_cast<const U *>(length);
    V gx = V{}, gy = V{}, gz = V{}, radial = V{};
    for (int64_t l = 1; l <= L; l++) {
      const U *gl = g + l * l + l;
      const T *fl = factors + packed(l, 0);
      const U *ql = q + packed(l, 0);
      const U *qp = q + packed(l - 1, 0);    // Q_{l-1}^m, m <= l - 1
      // m = 0: S = F Q_l^0
      V sum = gl[0] * (fl[0] * ql[0]);
      {
        V f = fl[0] * gl[0];
        V q1 = l - 1 >= 1 ? qp[1] : V{};
        gx += f * x * q1;
        gy += f * yy * q1;
        gz += f * static_cast<T>(l) * qp[0];
      }
      for (int64_t m = 1; m <= l; m++) {
        V fq = fl[m] * ql[m];
        sum += gl[m] * (fq * c[m]) + gl[-m] * (fq * s[m]);
        V qn = m + 1 <= l - 1 ? qp[m + 1] : V{};    // Q_{l-1}^{m+1}
        V qz = m <= l - 1 ? qp[m] : V{};            // Q_{l-1}^m
        V fp = fl[m] * gl[m], fn = fl[m] * gl[-m];
        V mq = static_cast<T>(m) * ql[m];
        // positive m: F Q c_m; negative: F Q s_m
        gx += fp * (x * qn * c[m] + mq * c[m - 1]) + fn * (x * qn * s[m] + mq * s[m - 1]);
        gy += fp * (yy * qn * c[m] - mq * s[m - 1]) + fn * (yy * qn * s[m] + mq * c[m - 1]);
        gz += static_cast<T>(l + m) * qz * (fp * c[m] + fn * s[m]);
      }
      radial += static_cast<T>(l) * sum;
    }
    gradient[0] = (gx - radial * x) / r;
    gradient[1] = (gy - radial * yy) / r;
    gradient[2] = (gz - radial * z) / r;
  }

  // d/ds Y_lm(v + s U) at s = 0 for every lm, to out[(l^2 + l + m) ld + lane]: the
  // forward-mode twin of `backward` (same identities), from the values of `compute`
  // (dx, dy, dz: the direction U, lanes<T>() values each)
  void directional(const T *ux, const T *uy, const T *uz, const T *length, const T *dx, const T *dy,
                   const T *dz, const U *__restrict q, const U *__restrict c, const U *__restrict s,
                   T *__restrict out, int64_t ld) const
  {
    V x = *reinterpret_cast<const U *>(ux), yy = *reinterpret_cast<const U *>(uy);
    V z = *reinterpret_cast<const U *>(uz), r = *reinterpret_cast<const U *>(length);
    V ex = *reinterpret_cast<const U *>(dx), ey = *reinterpret_cast<const U *>(dy);
    V ez = *reinterpret_cast<const U *>(dz);
    V inverse = T(1) / r;
    V along = ex * x + ey * yy + ez * z;    // U . u
    V planar = ex * x + ey * yy;
    *reinterpret_cast<U *>(out) = V{};
    for (int64_t l = 1; l <= L; l++) {
      T *yl = out + (l * l + l) * ld;
      const T *fl = factors + packed(l, 0);
      const U *ql = q + packed(l, 0);
      const U *qp = q + packed(l - 1, 0);
      V radial = static_cast<T>(l) * along;
      {
        V q1 = l - 1 >= 1 ? qp[1] : V{};
        V dq = planar * q1 + ez * static_cast<T>(l) * qp[0];
        *reinterpret_cast<U *>(yl) = fl[0] * (dq - radial * ql[0]) * inverse;
      }
      for (int64_t m = 1; m <= l; m++) {
        V qn = m + 1 <= l - 1 ? qp[m + 1] : V{};
        V qz = m <= l - 1 ? qp[m] : V{};
        V dq = planar * qn + ez * static_cast<T>(l + m) * qz;
        V mq = static_cast<T>(m) * ql[m];
        V positive = dq * c[m] + mq * (ex * c[m - 1] - ey * s[m - 1]) - radial * ql[m] * c[m];
        V negative = dq * s[m] + mq * (ex * s[m - 1] + ey * c[m - 1]) - radial * ql[m] * s[m];
        *reinterpret_cast<U *>(yl + m * ld) = fl[m] * positive * inverse;
        *reinterpret_cast<U *>(yl - m * ld) = fl[m] * negative * inverse;
      }
    }
  }
};

// The constants of HarmonicsBatch for l <= L, owned with it.
template <typename T> struct HarmonicsTables {
  std::vector<T> factors, a, b;
  HarmonicsBatch<T> batch;

  explicit HarmonicsTables(int64_t max_angular) :
      factors(harmonics_factors<T>(max_angular)), a(recurrence_coefficients<T>(max_angular, true)),
      b(recurrence_coefficients<T>(max_angular, false)),
      batch(max_angular, factors.data(), a.data(), b.data())
  {
  }
  HarmonicsTables(const HarmonicsTables &) = delete;
  HarmonicsTables &operator=(const HarmonicsTables &) = delete;
};

// f(r) times the values of n radial columns at t, from a table row whose 4
// coefficient vectors are `stride` apart, and (slope != nullptr) their
// r-derivatives: f'(r) value + f(r) d/dt value dt/dr
template <typename T>
void spline(const T *__restrict row, int64_t stride, int64_t n, T t, T factor, T d_factor, T dt_dr,
            T *__restrict value, T *__restrict slope)
{
  const T *c0 = row, *c1 = row + stride, *c2 = row + 2 * stride, *c3 = row + 3 * stride;
  if (slope == nullptr) {
    for (int64_t i = 0; i < n; i++) {
      value[i] = factor * (((c3[i] * t + c2[i]) * t + c1[i]) * t + c0[i]);
    }
    return;
  }
  T scaled = factor * dt_dr;
  for (int64_t i = 0; i < n; i++) {
    T raw = ((c3[i] * t + c2[i]) * t + c1[i]) * t + c0[i];
    T d_raw = (T(3) * c3[i] * t + T(2) * c2[i]) * t + c1[i];
    value[i] = factor * raw;
    slope[i] = d_factor * raw + scaled * d_raw;
  }
}

// S [n x npad] (padding 0) from the gradients on the triangle of P_l (see
// backward_kernel): the upper rows are contiguous, then mirrored
template <typename T>
void symmetric_gradient(int64_t n, int64_t npad, const T *__restrict grad, const T *__restrict p,
                        const T *__restrict w, const T *__restrict w2, T grad_total, T grad_squares,
                        T *__restrict s)
{
  T twice = 2 * grad_squares;
  for (int64_t a = 0; a < n; a++) {
    T *row = s + a * npad;
    int64_t width = n - a;
    for (int64_t i = 0; i < width; i++) {
      row[a + i] = grad[i] + grad_total * w[i] + twice * w2[i] * p[i];
    }
    row[a] *= 2;
    for (int64_t i = n; i < npad; i++) row[i] = 0;
    grad += width;
    p += width;
    w += width;
    w2 += width;
  }
  for (int64_t a = 1; a < n; a++) {
    for (int64_t b = 0; b < a; b++) s[a * npad + b] = s[b * npad + a];
  }
}

// ---- small matrix products, blocked for registers ----
//
// out[r, i] = sum_k A[k lda_k + r lda_r] B[k ldb + i], for r < rows and i < cols
// (cols a multiple of W, the lanes of a vector; the buffers are padded).
// Every product of the kernel is of this form, with operands of 4-48 columns: an
// block of RB rows x NV vectors of `out` stays in registers while k runs, so that each loaded
// vector of B feeds RB fused multiply-adds. Accumulation order is k ascending.

template <typename T, int RB, int NV>
__attribute__((always_inline)) inline void block(const T *__restrict a, int64_t lda_k,
                                                 int64_t lda_r, const T *__restrict b, int64_t ldb,
                                                 int64_t depth, T *__restrict out, int64_t ldo)
{
  using V = typename Vector<T>::type;
  using U = typename Vector<T>::unaligned;
  constexpr int W = static_cast<int>(lanes<T>());
  V acc[RB][NV];
  for (int r = 0; r < RB; r++) {
    for (int j = 0; j < NV; j++) acc[r][j] = V{};
  }
  for (int64_t k = 0; k < depth; k++) {
    const T *bk = b + k * ldb;
    const T *ak = a + k * lda_k;
    V bv[NV];
    for (int j = 0; j < NV; j++) bv[j] = *reinterpret_cast<const U *>(bk + j * W);
    for (int r = 0; r < RB; r++) {
      T ar = ak[r * lda_r];
      for (int j = 0; j < NV; j++) acc[r][j] += ar * bv[j];
    }
  }
  for (int r = 0; r < RB; r++) {
    for (int j = 0; j < NV; j++) *reinterpret_cast<U *>(out + r * ldo + j * W) = acc[r][j];
  }
}

template <typename T, int RB>
__attribute__((always_inline)) inline void
gemm_blocked(const T *__restrict a, int64_t lda_k, int64_t lda_r, int64_t rows,
             const T *__restrict b, int64_t ldb, int64_t depth, T *__restrict out, int64_t ldo,
             int64_t cols)
{
  constexpr int W = static_cast<int>(lanes<T>());
  int64_t r = 0;
  for (; r + RB <= rows; r += RB) {
    int64_t i = 0;
    for (; i + 2 * W <= cols; i += 2 * W) {
      block<T, RB, 2>(a + r * lda_r, lda_k, lda_r, b + i, ldb, depth, out + r * ldo + i, ldo);
    }
    for (; i < cols; i += W) {
      block<T, RB, 1>(a + r * lda_r, lda_k, lda_r, b + i, ldb, depth, out + r * ldo + i, ldo);
    }
  }
  for (; r < rows; r++) {
    int64_t i = 0;
    for (; i + 2 * W <= cols; i += 2 * W) {
      block<T, 1, 2>(a + r * lda_r, lda_k, lda_r, b + i, ldb, depth, out + r * ldo + i, ldo);
    }
    for (; i < cols; i += W) {
      block<T, 1, 1>(a + r * lda_r, lda_k, lda_r, b + i, ldb, depth, out + r * ldo + i, ldo);
    }
  }
}

// 4 x 2 vectors of accumulators: 8 of the 16 vector registers of x86-64 (SSE or
// AVX2; arm64 has 32)
template <typename T>
void gemm(const T *a, int64_t lda_k, int64_t lda_r, int64_t rows, const T *b, int64_t ldb,
          int64_t depth, T *out, int64_t ldo, int64_t cols)
{
  gemm_blocked<T, 4>(a, lda_k, lda_r, rows, b, ldb, depth, out, ldo, cols);
}

template <typename T> T dot(int64_t n, const T *__restrict x, const T *__restrict y)
{
  T sum = 0;
  for (int64_t i = 0; i < n; i++) sum += x[i] * y[i];
  return sum;
}

// upper triangle of the full square P_l [n x npad] (row-major, the model's order),
// and the weighted sums sum_t w_t t and sum_t w2_t t^2 over it
template <typename T>
void extract_triangle(int64_t n, int64_t npad, const T *p, const T *w, const T *w2, T *out,
                      T &total, T &squares)
{
  for (int64_t a = 0; a < n; a++) {
    const T *row = p + a * npad;
    for (int64_t b = a; b < n; b++) {
      T value = row[b];
      total += *w++ * value;
      squares += *w2++ * value * value;
      *out++ = value;
    }
  }
}

int64_t max_edges(const Inputs &in)
{
  const int64_t *offsets = in.offsets.data_ptr<int64_t>();
  int64_t most = 0;
  for (int64_t i = 0; i < in.n_atoms; i++) most = std::max(most, offsets[i + 1] - offsets[i]);
  return most;
}

// One edge's geometry and spline row; false for edges that contribute nothing
// (at or beyond the cutoff, or of length zero).
template <typename T> struct Edge {
  T x, y, z, r, t, dt_dr;
  int64_t row;

  bool load(const T *v, const int64_t *elements, int64_t e, const Grid &grid, int64_t rows)
  {
    x = v[3 * e];
    y = v[3 * e + 1];
    z = v[3 * e + 2];
    r = std::sqrt(x * x + y * y + z * z);
    if (!(r < static_cast<T>(grid.cutoff)) || r == T(0)) return false;
    int64_t interval;
    grid.locate(r, interval, t, dt_dr);
    row = elements[e] * (grid.n_nodes - 1) + interval;
    TORCH_CHECK(row >= 0 && row < rows, "alchem::power_spectrum: element out of range");
    return true;
  }
};

// Per-thread buffers for one atom's edges: unit vectors and lengths (padded to
// whole vectors with harmless values), and the harmonics, Y [H x edges].
template <typename T> struct EdgeBatch {
  using U = typename Vector<T>::unaligned;
  int64_t W, capacity, H;
  std::vector<Edge<T>> edges;
  std::vector<char> valid;
  std::vector<T> ux, uy, uz, length, y;
  // per batch of W edges, for the backward pass: vectors of W values, stored as
  // T (std::vector would not honour the 32-byte alignment of a vector type)
  std::vector<T> q, c, s;

  EdgeBatch(int64_t max_edges, int64_t max_angular) :
      W(lanes<T>()), capacity(round_up(max_edges, lanes<T>())),
      H((max_angular + 1) * (max_angular + 1)), edges(capacity), valid(capacity), ux(capacity),
      uy(capacity), uz(capacity), length(capacity), y(H * capacity),
      q(capacity * packed(max_angular + 1, 0)), c(capacity * (max_angular + 1)),
      s(capacity * (max_angular + 1))
  {
  }

  // record edge k (valid or not) and its unit vector
  void set(int64_t k, bool is_valid)
  {
    valid[k] = is_valid;
    const Edge<T> &e = edges[k];
    ux[k] = is_valid ? e.x / e.r : T(0);
    uy[k] = is_valid ? e.y / e.r : T(0);
    uz[k] = is_valid ? e.z / e.r : T(1);
    length[k] = is_valid ? e.r : T(1);
  }

  // Y of the first n edges into y [H x stride], stride = n rounded up to W;
  // columns of invalid edges are 0
  int64_t harmonics(const HarmonicsBatch<T> &batch, int64_t n)
  {
    int64_t stride = round_up(n, W);
    for (int64_t k = n; k < stride; k++) set_padding(k);
    for (int64_t k0 = 0, b = 0; k0 < stride; k0 += W, b++) {
      batch.compute(ux.data() + k0, uy.data() + k0, uz.data() + k0, q_batch(b, batch),
                    c_batch(b, batch), s_batch(b, batch), y.data() + k0, stride);
    }
    for (int64_t k = 0; k < n; k++) {
      if (!valid[k]) {
        for (int64_t h = 0; h < H; h++) y[h * stride + k] = T(0);
      }
    }
    return stride;
  }

  U *q_batch(int64_t b, const HarmonicsBatch<T> &h)
  {
    return reinterpret_cast<U *>(q.data() + b * W * h.n_q);
  }
  U *c_batch(int64_t b, const HarmonicsBatch<T> &h)
  {
    return reinterpret_cast<U *>(c.data() + b * W * (h.L + 1));
  }
  U *s_batch(int64_t b, const HarmonicsBatch<T> &h)
  {
    return reinterpret_cast<U *>(s.data() + b * W * (h.L + 1));
  }

  void set_padding(int64_t k)
  {
    valid[k] = false;
    ux[k] = uy[k] = T(0);
    uz[k] = length[k] = T(1);
  }
};

// The spline table (elements x grid intervals rows of 4 x C values, 6 KB per
// row for the default model in float32) does not fit in L2: the row of the edge
// PREFETCH_AHEAD places later is fetched while this one is evaluated.
constexpr int64_t PREFETCH_AHEAD = 2;

template <typename T>
void prefetch_row(const EdgeBatch<T> &batch, int64_t k, int64_t n_edges, const T *table, int64_t C)
{
  if (k >= n_edges || !batch.valid[k]) return;
  const char *row = reinterpret_cast<const char *>(table + batch.edges[k].row * 4 * C);
  int64_t bytes = 4 * C * static_cast<int64_t>(sizeof(T));
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(row + offset);
}

// Loads the edges of one atom (those from `first` in the sorted order) into
// `batch` and writes f(r) g_c(r) of every edge, l by l, to values [edges x npad_l]
// (and d/dr of it to slopes, if not null); invalid edges get zeros.
template <typename T>
void stage_edges(const Inputs &in, int64_t first, int64_t n_edges, const T *table, int64_t rows,
                 const Layout &layout, const Grid &grid, const Features &features, int64_t capacity,
                 EdgeBatch<T> &batch, T *values, T *slopes)
{
  const T *v = in.vectors.data_ptr<T>();
  const int64_t *el = in.elements.data_ptr<int64_t>();
  const int64_t *order = in.order.data_ptr<int64_t>();
  const int64_t C = layout.n_columns;
  for (int64_t k = 0; k < n_edges; k++) {
    batch.set(k, batch.edges[k].load(v, el, order[first + k], grid, rows));
  }
  for (int64_t k = 0; k < n_edges; k++) {
    const Edge<T> &edge = batch.edges[k];
    const bool valid = batch.valid[k];
    prefetch_row(batch, k + PREFETCH_AHEAD, n_edges, table, C);
    const T *row = valid ? table + edge.row * 4 * C : nullptr;
    T factor = 1, d_factor = 0;
    if (valid) features.factor(edge.r, grid.cutoff, factor, d_factor);
    for (int64_t l = 0; l <= layout.max_angular; l++) {
      const int64_t n = layout.channels[l];
      const int64_t at = capacity * layout.padded_offsets[l] + k * layout.padded[l];
      T *slope = slopes != nullptr ? slopes + at : nullptr;
      if (valid) {
        spline<T>(row + layout.columns[l], C, n, edge.t, factor, d_factor, edge.dt_dr, values + at,
                  slope);
      } else {
        std::fill_n(values + at, n, T(0));
        if (slope != nullptr) std::fill_n(slope, n, T(0));
      }
    }
  }
}

template <typename T>
void forward_kernel(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                    const Grid &grid, const Features &features, torch::Tensor &triangles,
                    torch::Tensor &total, torch::Tensor &squares, torch::Tensor &densities)
{
  const T *w = features.total_weights.data_ptr<T>();
  const T *w2 = features.square_weights.data_ptr<T>();
  const bool own = features.center_density.numel() > 0;
  const int64_t *center_species = own ? features.center_species.data_ptr<int64_t>() : nullptr;
  const T *center_density = own ? features.center_density.data_ptr<T>() : nullptr;
  const int64_t *offsets = in.offsets.data_ptr<int64_t>();
  const T *table = coefficients.data_ptr<T>();
  T *out = triangles.data_ptr<T>();
  T *out_total = total.data_ptr<T>();
  T *out_squares = squares.data_ptr<T>();
  T *out_density = densities.data_ptr<T>();
  HarmonicsTables<T> tables(layout.max_angular);
  const HarmonicsBatch<T> &harmonics = tables.batch;
  const int64_t rows = coefficients.size(0);
  const int64_t capacity = std::max(max_edges(in), int64_t(1));

  at::parallel_for(0, in.n_atoms, 1, [&](int64_t begin, int64_t end) {
    EdgeBatch<T> batch(capacity, layout.max_angular);
    // radial values of every edge, l by l: [edges x npad_l] (padding stays 0)
    std::vector<T> radial(capacity * layout.padded_columns, T(0));
    std::vector<T> square(layout.max_padded * layout.max_padded);
    for (int64_t i = begin; i < end; i++) {
      int64_t first = offsets[i], n_edges = offsets[i + 1] - first;
      stage_edges<T>(in, first, n_edges, table, rows, layout, grid, features, capacity, batch,
                     radial.data(), nullptr);
      int64_t stride = batch.harmonics(harmonics, n_edges);
      T *density = out_density + i * layout.density_size;
      T *tri = out + i * layout.triangle_size;
      T sum = 0, sum2 = 0;
      for (int64_t l = 0; l <= layout.max_angular; l++) {
        int64_t n = layout.channels[l], npad = layout.padded[l], M = 2 * l + 1;
        T *cl = density + layout.density[l];
        const T *rl = radial.data() + capacity * layout.padded_offsets[l];
        // C_l [M x npad] = Y_l G_l: sum over the edges
        gemm<T>(batch.y.data() + l * l * stride, 1, stride, M, rl, npad, n_edges, cl, npad, npad);
        if (l == 0 && own) {
          const T *center = center_density + center_species[i] * n;
          for (int64_t c = 0; c < n; c++) cl[c] += center[c];
        }
        // P_l = C_l^T C_l, full square, then its upper triangle
        gemm<T>(cl, npad, 1, n, cl, npad, M, square.data(), npad, npad);
        extract_triangle<T>(n, npad, square.data(), w + layout.triangle[l], w2 + layout.triangle[l],
                            tri + layout.triangle[l], sum, sum2);
      }
      out_total[i] = sum;
      out_squares[i] = sum2;
    }
  });
}

// What both backward passes read: the weights of the LayerNorm sums, the edges, the
// table, the forward pass's densities and triangles, and the gradient on its outputs.
template <typename T> struct GradientInputs {
  const T *w, *w2, *table, *densities, *triangles, *g_tri, *g_total, *g_squares;
  const int64_t *offsets, *order;

  GradientInputs(const Inputs &in, const torch::Tensor &coefficients, const Features &features,
                 const torch::Tensor &densities_, const torch::Tensor &triangles_,
                 const torch::Tensor &grad_triangles, const torch::Tensor &grad_total,
                 const torch::Tensor &grad_squares) :
      w(features.total_weights.data_ptr<T>()), w2(features.square_weights.data_ptr<T>()),
      table(coefficients.data_ptr<T>()), densities(densities_.data_ptr<T>()),
      triangles(triangles_.data_ptr<T>()), g_tri(grad_triangles.data_ptr<T>()),
      g_total(grad_total.data_ptr<T>()), g_squares(grad_squares.data_ptr<T>()),
      offsets(in.offsets.data_ptr<int64_t>()), order(in.order.data_ptr<int64_t>())
  {
  }
};

// Per-atom buffers of the backward passes, set up once per thread.
template <typename T> struct BackwardBuffers {
  EdgeBatch<T> batch;
  // radial values and their r-derivatives [edges x npad_l], l by l (padding 0)
  std::vector<T> values, slopes;
  std::vector<T> s, d_density, a;

  BackwardBuffers(int64_t capacity, const Layout &layout) :
      batch(capacity, layout.max_angular), values(capacity * layout.padded_columns, T(0)),
      slopes(capacity * layout.padded_columns, T(0)), s(layout.max_padded * layout.max_padded),
      d_density(layout.density_size), a(capacity * layout.max_padded)
  {
  }
};

// Records edge k of the atom whose edges start at `first` (sorted order) in the
// table gradient: its row (-1: contributes nothing) and t.
template <typename T>
void record_edge(const EdgeBatch<T> &batch, int64_t first, int64_t k, TableGradient &table)
{
  const Edge<T> &edge = batch.edges[k];
  table.rows.data_ptr<int64_t>()[first + k] = batch.valid[k] ? edge.row : -1;
  table.t.data_ptr<T>()[first + k] = batch.valid[k] ? edge.t : T(0);
}

// dL/d(edge vectors) and, with `table` (training), the per-edge pieces of dL/d(spline
// table), atom by atom in parallel. One function of about 120 lines: the per-thread
// buffers are set up once per thread (in the parallel_for body) and every step below
// reads the previous one's while they are in the L1/L2 cache; split into functions
// they would have to be passed around as a dozen arguments without making a step
// readable on its own. An undefined `grad_vectors` skips the vectors' part.
template <typename T>
void backward_kernel(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                     const Grid &grid, const Features &features, const torch::Tensor &densities,
                     const torch::Tensor &triangles, const torch::Tensor &grad_triangles,
                     const torch::Tensor &grad_total, const torch::Tensor &grad_squares,
                     torch::Tensor &grad_vectors, TableGradient *table_gradient)
{
  using U = typename Vector<T>::unaligned;
  const GradientInputs<T> p(in, coefficients, features, densities, triangles, grad_triangles,
                            grad_total, grad_squares);
  const T *w = p.w, *w2 = p.w2, *table = p.table, *dens = p.densities, *tri = p.triangles;
  const T *g_tri = p.g_tri, *g_total = p.g_total, *g_squares = p.g_squares;
  const int64_t *offsets = p.offsets, *order = p.order;
  const bool vectors = grad_vectors.defined();
  T *out = vectors ? grad_vectors.data_ptr<T>() : nullptr;
  T *alpha = table_gradient != nullptr ? table_gradient->alpha.data_ptr<T>() : nullptr;
  const int64_t C = layout.n_columns;
  HarmonicsTables<T> tables(layout.max_angular);
  const HarmonicsBatch<T> &harmonics = tables.batch;
  const int64_t H = (layout.max_angular + 1) * (layout.max_angular + 1);
  const int64_t rows = coefficients.size(0);
  const int64_t capacity = std::max(max_edges(in), int64_t(1));
  const int64_t W = lanes<T>();

  // dL/dY per edge, l by l: [edges x Mpad_l], Mpad_l = 2l + 1 rounded up to W
  std::vector<int64_t> y_offsets{0};
  for (int64_t l = 0; l <= layout.max_angular; l++) {
    y_offsets.push_back(y_offsets.back() + round_up(2 * l + 1, W));
  }
  const int64_t y_padded = y_offsets.back();

  at::parallel_for(0, in.n_atoms, 1, [&](int64_t begin, int64_t end) {
    BackwardBuffers<T> buffers(capacity, layout);
    EdgeBatch<T> &batch = buffers.batch;
    std::vector<T> d_t(batch.capacity, T(0)), factor(batch.capacity, T(1));
    std::vector<T> d_density_t(layout.max_padded * round_up(2 * layout.max_angular + 1, W), T(0));
    std::vector<T> d_y(batch.capacity * y_padded, T(0));
    std::vector<T> grad_storage(H * W);
    U *grad_y = reinterpret_cast<U *>(grad_storage.data());
    for (int64_t i = begin; i < end; i++) {
      int64_t first = offsets[i], n_edges = offsets[i + 1] - first;
      if (n_edges == 0) continue;
      stage_edges<T>(in, first, n_edges, table, rows, layout, grid, features, capacity, batch,
                     buffers.values.data(), vectors ? buffers.slopes.data() : nullptr);
      int64_t stride = batch.harmonics(harmonics, n_edges);
      if (alpha != nullptr) {
        for (int64_t k = 0; k < n_edges; k++) {
          record_edge(batch, first, k, *table_gradient);
          T d_factor;
          if (batch.valid[k]) features.factor(batch.edges[k].r, grid.cutoff, factor[k], d_factor);
        }
      }
      std::fill(d_t.begin(), d_t.end(), T(0));
      const T *density = dens + i * layout.density_size;
      for (int64_t l = 0; l <= layout.max_angular; l++) {
        int64_t n = layout.channels[l], npad = layout.padded[l], M = 2 * l + 1;
        int64_t mpad = round_up(M, W);
        // The loss depends on the full symmetric P_l through the triangle t
        // (t_ab = P_ab, a <= b), total = sum_ab P_ab and squares = sum_ab P_ab^2.
        // With H_ab = dL/dP_ab symmetrised, dL/dC = 2 C H =: C S, where
        // S_ab = g_ab (a < b), 2 g_aa (a = b), + 2 g_total + 4 g_squares P_ab.
        symmetric_gradient<T>(n, npad, g_tri + i * layout.triangle_size + layout.triangle[l],
                              tri + i * layout.triangle_size + layout.triangle[l],
                              w + layout.triangle[l], w2 + layout.triangle[l], g_total[i],
                              g_squares[i], buffers.s.data());
        const T *cl = density + layout.density[l];
        T *dl = buffers.d_density.data() + layout.density[l];
        // dC_l [M x npad] = C_l S_l
        gemm<T>(cl, 1, npad, M, buffers.s.data(), npad, n, dl, npad, npad);
        // sum_m Y_lm dC_l[m, :] per edge [edges x npad]: dL/d(radial values)
        T *a = buffers.a.data();
        gemm<T>(batch.y.data() + l * l * stride, stride, 1, n_edges, dl, npad, M, a, npad, npad);
        if (alpha != nullptr) {
          for (int64_t k = 0; k < n_edges; k++) {
            T *target = alpha + (first + k) * C + layout.columns[l];
            for (int64_t x = 0; x < n; x++) target[x] = factor[k] * a[k * npad + x];
          }
        }
        if (!vectors) continue;
        // dL/dY_lm per edge [edges x mpad] = G_l dC_l^T (dC_l^T [npad x mpad])
        for (int64_t m = 0; m < M; m++) {
          for (int64_t x = 0; x < n; x++) d_density_t[x * mpad + m] = dl[m * npad + x];
        }
        const T *gl = buffers.values.data() + capacity * layout.padded_offsets[l];
        gemm<T>(gl, 1, npad, n_edges, d_density_t.data(), mpad, n, d_y.data() + y_offsets[l],
                y_padded, mpad);
        const T *sl = buffers.slopes.data() + capacity * layout.padded_offsets[l];
        for (int64_t k = 0; k < n_edges; k++) d_t[k] += dot<T>(n, a + k * npad, sl + k * npad);
      }
      if (!vectors) continue;
      // the harmonics' part, W edges at a time (lanes of padding edges: 0)
      for (int64_t k0 = 0, b = 0; k0 < stride; k0 += W, b++) {
        int64_t width = std::min(W, n_edges - k0);
        for (int64_t l = 0; l <= layout.max_angular; l++) {
          for (int64_t m = 0; m < 2 * l + 1; m++) {
            U &g = grad_y[l * l + m];
            g = U{};
            for (int64_t j = 0; j < width; j++) g[j] = d_y[(k0 + j) * y_padded + y_offsets[l] + m];
          }
        }
        U gradient[3];
        harmonics.backward(grad_y, batch.ux.data() + k0, batch.uy.data() + k0, batch.uz.data() + k0,
                           batch.length.data() + k0, batch.q_batch(b, harmonics),
                           batch.c_batch(b, harmonics), batch.s_batch(b, harmonics), gradient);
        for (int64_t j = 0; j < width; j++) {
          int64_t k = k0 + j;
          if (!batch.valid[k]) continue;
          T d_r = d_t[k];    // the slopes are d/dr already
          int64_t e = order[first + k];
          out[3 * e] = gradient[0][j] + d_r * batch.ux[k];
          out[3 * e + 1] = gradient[1][j] + d_r * batch.uy[k];
          out[3 * e + 2] = gradient[2][j] + d_r * batch.uz[k];
        }
      }
    }
  });
}

// The backward pass differentiated (training: the loss depends on the forces, the
// gradient with respect to the edge vectors). With u_e = dL/d(grad_vectors)_e and
// dC = C S the backward's gradient on the density, the backward's output is
// sum_e u_e . grad_vectors_e = <C S, D>, D = sum_e u_e . d(Y g)/dr_e (the density's
// derivative along u, forward mode). So:
//   dL/dg_t = dP_t with dP = C^T D + D^T C (the triangle's derivative along u),
//   dL/dg_total = sum_t w_t dP_t, dL/dg_squares = sum_t 2 w2_t P_t dP_t,
//   dL/dC = D S + C sym(Z), Z_t = 2 g_squares w2_t dP_t (S depends on P),
// and the table gets, per edge, from the radial values g (Y^T (dL/dC) + Y'^T dC,
// Y' = u . grad Y) and from their slopes g' (times u . r_hat, Y^T dC). The second
// derivative with respect to the vectors themselves is not computed (the caller
// checks that no one asks for it).
template <typename T>
void double_backward_kernel(const Inputs &in, const torch::Tensor &coefficients,
                            const Layout &layout, const Grid &grid, const Features &features,
                            const torch::Tensor &densities, const torch::Tensor &triangles,
                            const torch::Tensor &grad_triangles, const torch::Tensor &grad_total,
                            const torch::Tensor &grad_squares, const torch::Tensor &direction,
                            torch::Tensor &gg_triangles, torch::Tensor &gg_total,
                            torch::Tensor &gg_squares, TableGradient &table_gradient)
{
  const GradientInputs<T> p(in, coefficients, features, densities, triangles, grad_triangles,
                            grad_total, grad_squares);
  const T *w = p.w, *w2 = p.w2, *table = p.table, *dens = p.densities, *tri = p.triangles;
  const T *g_tri = p.g_tri, *g_total = p.g_total, *g_squares = p.g_squares;
  const int64_t *offsets = p.offsets, *order = p.order;
  const T *u = direction.data_ptr<T>();
  T *out_tri = gg_triangles.data_ptr<T>();
  T *out_total = gg_total.data_ptr<T>();
  T *out_squares = gg_squares.data_ptr<T>();
  T *alpha = table_gradient.alpha.data_ptr<T>();
  T *beta = table_gradient.beta.data_ptr<T>();
  const int64_t C = layout.n_columns;
  HarmonicsTables<T> tables(layout.max_angular);
  const HarmonicsBatch<T> &harmonics = tables.batch;
  const int64_t H = (layout.max_angular + 1) * (layout.max_angular + 1);
  const int64_t rows = coefficients.size(0);
  const int64_t capacity = std::max(max_edges(in), int64_t(1));
  const int64_t W = lanes<T>();
  const int64_t square = layout.max_padded * layout.max_padded;
  const int64_t block = (2 * layout.max_angular + 1) * layout.max_padded;

  at::parallel_for(0, in.n_atoms, 1, [&](int64_t begin, int64_t end) {
    BackwardBuffers<T> buffers(capacity, layout);
    EdgeBatch<T> &batch = buffers.batch;
    const int64_t edge_capacity = batch.capacity;
    // the direction u per edge (0 on padding) and u . r_hat, the factor f(r), f'(r)
    std::vector<T> ux(edge_capacity), uy(edge_capacity), uz(edge_capacity);
    std::vector<T> along(edge_capacity), factor(edge_capacity), d_factor(edge_capacity);
    std::vector<T> y_along(H * edge_capacity), scaled(capacity * layout.max_padded);
    std::vector<T> z_sym(square), z_triangle(layout.max_padded * layout.max_padded);
    std::vector<T> d_c(block), dc_dir(block), d_loss(block), tmp(block), x_square(square);
    std::vector<T> q(capacity * layout.max_padded);
    for (int64_t i = begin; i < end; i++) {
      int64_t first = offsets[i], n_edges = offsets[i + 1] - first;
      if (n_edges == 0) {
        std::fill_n(out_tri + i * layout.triangle_size, layout.triangle_size, T(0));
        out_total[i] = out_squares[i] = T(0);
        continue;
      }
      stage_edges<T>(in, first, n_edges, table, rows, layout, grid, features, capacity, batch,
                     buffers.values.data(), buffers.slopes.data());
      int64_t stride = batch.harmonics(harmonics, n_edges);
      for (int64_t k = 0; k < stride; k++) {
        bool valid = k < n_edges && batch.valid[k];
        const T *ue = valid ? u + 3 * order[first + k] : nullptr;
        ux[k] = valid ? ue[0] : T(0);
        uy[k] = valid ? ue[1] : T(0);
        uz[k] = valid ? ue[2] : T(0);
        along[k] = ux[k] * batch.ux[k] + uy[k] * batch.uy[k] + uz[k] * batch.uz[k];
        factor[k] = 1;
        d_factor[k] = 0;
        if (valid) features.factor(batch.edges[k].r, grid.cutoff, factor[k], d_factor[k]);
        if (k < n_edges) record_edge(batch, first, k, table_gradient);
      }
      for (int64_t k0 = 0, b = 0; k0 < stride; k0 += W, b++) {
        harmonics.directional(batch.ux.data() + k0, batch.uy.data() + k0, batch.uz.data() + k0,
                              batch.length.data() + k0, ux.data() + k0, uy.data() + k0,
                              uz.data() + k0, batch.q_batch(b, harmonics),
                              batch.c_batch(b, harmonics), batch.s_batch(b, harmonics),
                              y_along.data() + k0, stride);
      }
      const T *density = dens + i * layout.density_size;
      T sum_total = 0, sum_squares = 0;
      for (int64_t l = 0; l <= layout.max_angular; l++) {
        int64_t n = layout.channels[l], npad = layout.padded[l], M = 2 * l + 1;
        const T *yl = batch.y.data() + l * l * stride;
        const T *yl_along = y_along.data() + l * l * stride;
        const T *gl = buffers.values.data() + capacity * layout.padded_offsets[l];
        const T *sl = buffers.slopes.data() + capacity * layout.padded_offsets[l];
        const T *cl = density + layout.density[l];
        // D = Y' G + Y diag(u . r_hat) G' [M x npad]
        for (int64_t k = 0; k < n_edges; k++) {
          for (int64_t x = 0; x < npad; x++) scaled[k * npad + x] = along[k] * sl[k * npad + x];
        }
        gemm<T>(yl_along, 1, stride, M, gl, npad, n_edges, dc_dir.data(), npad, npad);
        gemm<T>(yl, 1, stride, M, scaled.data(), npad, n_edges, tmp.data(), npad, npad);
        for (int64_t e = 0; e < M * npad; e++) dc_dir[e] += tmp[e];
        // X = C^T D [npad x npad]; dP_ab = X_ab + X_ba on the upper triangle
        gemm<T>(cl, npad, 1, n, dc_dir.data(), npad, M, x_square.data(), npad, npad);
        const int64_t offset = i * layout.triangle_size + layout.triangle[l];
        const T *wl = w + layout.triangle[l], *w2l = w2 + layout.triangle[l];
        const T *pl = tri + offset;
        T *dp = out_tri + offset;
        T twice = 2 * g_squares[i];
        for (int64_t a = 0, t = 0; a < n; a++) {
          for (int64_t b = a; b < n; b++, t++) {
            T value = x_square[a * npad + b] + x_square[b * npad + a];
            dp[t] = value;
            sum_total += wl[t] * value;
            sum_squares += 2 * w2l[t] * pl[t] * value;
            z_triangle[t] = twice * w2l[t] * value;
          }
        }
        // S and sym(Z) as the backward builds S (sym(Z): no total, no squares)
        symmetric_gradient<T>(n, npad, g_tri + offset, pl, wl, w2l, g_total[i], g_squares[i],
                              buffers.s.data());
        symmetric_gradient<T>(n, npad, z_triangle.data(), pl, wl, w2l, T(0), T(0), z_sym.data());
        // dC = C S; dL/dC = D S + C sym(Z)
        gemm<T>(cl, 1, npad, M, buffers.s.data(), npad, n, d_c.data(), npad, npad);
        gemm<T>(dc_dir.data(), 1, npad, M, buffers.s.data(), npad, n, d_loss.data(), npad, npad);
        gemm<T>(cl, 1, npad, M, z_sym.data(), npad, n, tmp.data(), npad, npad);
        for (int64_t e = 0; e < M * npad; e++) d_loss[e] += tmp[e];
        // per edge: a = Y^T dC (times the slopes' derivative), q = Y^T dL/dC + Y'^T dC
        T *a = buffers.a.data();
        gemm<T>(yl, stride, 1, n_edges, d_c.data(), npad, M, a, npad, npad);
        gemm<T>(yl, stride, 1, n_edges, d_loss.data(), npad, M, q.data(), npad, npad);
        gemm<T>(yl_along, stride, 1, n_edges, d_c.data(), npad, M, scaled.data(), npad, npad);
        for (int64_t k = 0; k < n_edges; k++) {
          T *target_alpha = alpha + (first + k) * C + layout.columns[l];
          T *target_beta = beta + (first + k) * C + layout.columns[l];
          T slope_factor = along[k] * d_factor[k];
          T t_factor = batch.valid[k] ? along[k] * factor[k] * batch.edges[k].dt_dr : T(0);
          const T *ak = a + k * npad, *qk = q.data() + k * npad, *bk = scaled.data() + k * npad;
          for (int64_t x = 0; x < n; x++) {
            target_alpha[x] = factor[k] * (qk[x] + bk[x]) + slope_factor * ak[x];
            target_beta[x] = t_factor * ak[x];
          }
        }
      }
      out_total[i] = sum_total;
      out_squares[i] = sum_squares;
    }
  });
}

// dL/d(spline table) from the per-edge pieces: edge e's piece on its row,
// pi_e[p, x] = alpha_e[x] t^p + beta_e[x] p t^(p-1). With `weights` [S, C] defined the
// table is factored, table[a (G - 1) + g, p, x] = base[g, p, x] weights[a, x] (the
// Alchemical Model: spline of the radial functions times W), and the gradient goes to
// its factors: grad_base [G - 1, 4, C] gets pi_e weights[a_e] and grad_weights [S, C]
// gets sum_p pi_e base[g_e]; without, grad_base is the table's [rows, 4, C]. Both
// zeros on entry. Parallel over column blocks, each summing the edges in their
// sorted order (deterministic).
template <typename T>
void table_gradient_kernel(const TableGradient &pieces, const torch::Tensor &base,
                           const torch::Tensor &weights, torch::Tensor &grad_base,
                           torch::Tensor &grad_weights)
{
  const int64_t n_edges = pieces.rows.size(0);
  const int64_t C = base.size(2);
  const int64_t intervals = base.size(0);
  const bool factored = weights.defined();
  const int64_t *rows = pieces.rows.data_ptr<int64_t>();
  const T *t = pieces.t.data_ptr<T>();
  const T *alpha = pieces.alpha.data_ptr<T>();
  const T *beta = pieces.beta.defined() ? pieces.beta.data_ptr<T>() : nullptr;
  const T *b = base.data_ptr<T>();
  const T *w = factored ? weights.data_ptr<T>() : nullptr;
  T *out = grad_base.data_ptr<T>();
  T *out_w = factored ? grad_weights.data_ptr<T>() : nullptr;
  at::parallel_for(0, C, 32, [&](int64_t c0, int64_t c1) {
    for (int64_t e = 0; e < n_edges; e++) {
      if (rows[e] < 0) continue;
      T t1 = t[e], t2 = t1 * t1, t3 = t2 * t1, twice = 2 * t1, thrice = 3 * t2;
      int64_t row = factored ? rows[e] % intervals : rows[e];
      T *g0 = out + row * 4 * C, *g1 = g0 + C, *g2 = g1 + C, *g3 = g2 + C;
      const T *a = alpha + e * C;
      const T *d = beta != nullptr ? beta + e * C : nullptr;
      const T *we = factored ? w + (rows[e] / intervals) * C : nullptr;
      const T *b0 = b + row * 4 * C, *b1 = b0 + C, *b2 = b1 + C, *b3 = b2 + C;
      T *gw = factored ? out_w + (rows[e] / intervals) * C : nullptr;
      for (int64_t x = c0; x < c1; x++) {
        T p0 = a[x], p1 = a[x] * t1, p2 = a[x] * t2, p3 = a[x] * t3;
        if (d != nullptr) {
          p1 += d[x];
          p2 += twice * d[x];
          p3 += thrice * d[x];
        }
        if (!factored) {
          g0[x] += p0;
          g1[x] += p1;
          g2[x] += p2;
          g3[x] += p3;
          continue;
        }
        g0[x] += p0 * we[x];
        g1[x] += p1 * we[x];
        g2[x] += p2 * we[x];
        g3[x] += p3 * we[x];
        gw[x] += p0 * b0[x] + p1 * b1[x] + p2 * b2[x] + p3 * b3[x];
      }
    }
  });
}

void forward(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
             const Grid &grid, const Features &features, torch::Tensor &triangles,
             torch::Tensor &total, torch::Tensor &squares, torch::Tensor &densities)
{
  AT_DISPATCH_FLOATING_TYPES(in.vectors.scalar_type(), "alchem::power_spectrum", [&] {
    forward_kernel<scalar_t>(in, coefficients, layout, grid, features, triangles, total, squares,
                             densities);
  });
}

void backward(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
              const Grid &grid, const Features &features, const torch::Tensor &densities,
              const torch::Tensor &triangles, const torch::Tensor &grad_triangles,
              const torch::Tensor &grad_total, const torch::Tensor &grad_squares,
              torch::Tensor &grad_vectors, TableGradient *table_gradient)
{
  AT_DISPATCH_FLOATING_TYPES(in.vectors.scalar_type(), "alchem::power_spectrum_backward", [&] {
    backward_kernel<scalar_t>(in, coefficients, layout, grid, features, densities, triangles,
                              grad_triangles, grad_total, grad_squares, grad_vectors,
                              table_gradient);
  });
}

void double_backward(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                     const Grid &grid, const Features &features, const torch::Tensor &densities,
                     const torch::Tensor &triangles, const torch::Tensor &grad_triangles,
                     const torch::Tensor &grad_total, const torch::Tensor &grad_squares,
                     const torch::Tensor &direction, torch::Tensor &gg_triangles,
                     torch::Tensor &gg_total, torch::Tensor &gg_squares,
                     TableGradient &table_gradient)
{
  AT_DISPATCH_FLOATING_TYPES(in.vectors.scalar_type(), "alchem::power_spectrum_double", [&] {
    double_backward_kernel<scalar_t>(in, coefficients, layout, grid, features, densities, triangles,
                                     grad_triangles, grad_total, grad_squares, direction,
                                     gg_triangles, gg_total, gg_squares, table_gradient);
  });
}

void table_gradient(const TableGradient &pieces, const torch::Tensor &base,
                    const torch::Tensor &weights, torch::Tensor &grad_base,
                    torch::Tensor &grad_weights)
{
  AT_DISPATCH_FLOATING_TYPES(base.scalar_type(), "alchem::power_spectrum_table", [&] {
    table_gradient_kernel<scalar_t>(pieces, base, weights, grad_base, grad_weights);
  });
}

const Kernel kernel = {ALCHEM_KERNEL_NAME, lanes<float>(),   lanes<double>(), &forward,
                       &backward,          &double_backward, &table_gradient};

}    // namespace ALCHEM_KERNEL_VARIANT
}    // namespace alchem_ops
