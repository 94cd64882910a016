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
  auto factors = harmonics_factors<T>(layout.max_angular);
  auto ca = recurrence_coefficients<T>(layout.max_angular, true);
  auto cb = recurrence_coefficients<T>(layout.max_angular, false);
  HarmonicsBatch<T> harmonics(layout.max_angular, factors.data(), ca.data(), cb.data());
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

// dL/d(edge vectors) for the atoms' edges, atom by atom in parallel. One
// function of about 110 lines: the per-thread buffers are set up once per thread
// (in the parallel_for body) and every step below reads the previous one's while
// they are in the L1/L2 cache; split into functions they would have to be passed
// around as a dozen arguments without making a step readable on its own.
template <typename T>
void backward_kernel(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                     const Grid &grid, const Features &features, const torch::Tensor &densities,
                     const torch::Tensor &triangles, const torch::Tensor &grad_triangles,
                     const torch::Tensor &grad_total, const torch::Tensor &grad_squares,
                     torch::Tensor &grad_vectors)
{
  using U = typename Vector<T>::unaligned;
  const T *w = features.total_weights.data_ptr<T>();
  const T *w2 = features.square_weights.data_ptr<T>();
  const int64_t *offsets = in.offsets.data_ptr<int64_t>();
  const T *table = coefficients.data_ptr<T>();
  const T *dens = densities.data_ptr<T>();
  const T *tri = triangles.data_ptr<T>();
  const T *g_tri = grad_triangles.data_ptr<T>();
  const T *g_total = grad_total.data_ptr<T>();
  const T *g_squares = grad_squares.data_ptr<T>();
  T *out = grad_vectors.data_ptr<T>();
  auto factors = harmonics_factors<T>(layout.max_angular);
  auto ca = recurrence_coefficients<T>(layout.max_angular, true);
  auto cb = recurrence_coefficients<T>(layout.max_angular, false);
  HarmonicsBatch<T> harmonics(layout.max_angular, factors.data(), ca.data(), cb.data());
  const int64_t *order = in.order.data_ptr<int64_t>();
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
    EdgeBatch<T> batch(capacity, layout.max_angular);
    std::vector<T> d_t(batch.capacity, T(0));
    // radial values and their t-derivatives [edges x npad_l], l by l (padding 0)
    std::vector<T> values(capacity * layout.padded_columns, T(0));
    std::vector<T> slopes(capacity * layout.padded_columns, T(0));
    std::vector<T> d_density(layout.density_size), s(layout.max_padded * layout.max_padded);
    std::vector<T> d_density_t(layout.max_padded * round_up(2 * layout.max_angular + 1, W), T(0));
    std::vector<T> d_y(batch.capacity * y_padded, T(0)), a(capacity * layout.max_padded);
    std::vector<T> grad_storage(H * W);
    U *grad_y = reinterpret_cast<U *>(grad_storage.data());
    for (int64_t i = begin; i < end; i++) {
      int64_t first = offsets[i], n_edges = offsets[i + 1] - first;
      if (n_edges == 0) continue;
      stage_edges<T>(in, first, n_edges, table, rows, layout, grid, features, capacity, batch,
                     values.data(), slopes.data());
      int64_t stride = batch.harmonics(harmonics, n_edges);
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
                              g_squares[i], s.data());
        const T *cl = density + layout.density[l];
        T *dl = d_density.data() + layout.density[l];
        // dC_l [M x npad] = C_l S_l
        gemm<T>(cl, 1, npad, M, s.data(), npad, n, dl, npad, npad);
        // dL/dY_lm per edge [edges x mpad] = G_l dC_l^T (dC_l^T [npad x mpad])
        for (int64_t m = 0; m < M; m++) {
          for (int64_t x = 0; x < n; x++) d_density_t[x * mpad + m] = dl[m * npad + x];
        }
        const T *gl = values.data() + capacity * layout.padded_offsets[l];
        gemm<T>(gl, 1, npad, n_edges, d_density_t.data(), mpad, n, d_y.data() + y_offsets[l],
                y_padded, mpad);
        // sum_m Y_lm dC_l[m, :] per edge [edges x npad], then dotted with the slopes
        gemm<T>(batch.y.data() + l * l * stride, stride, 1, n_edges, dl, npad, M, a.data(), npad,
                npad);
        const T *sl = slopes.data() + capacity * layout.padded_offsets[l];
        for (int64_t k = 0; k < n_edges; k++) {
          d_t[k] += dot<T>(n, a.data() + k * npad, sl + k * npad);
        }
      }
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
              torch::Tensor &grad_vectors)
{
  AT_DISPATCH_FLOATING_TYPES(in.vectors.scalar_type(), "alchem::power_spectrum_backward", [&] {
    backward_kernel<scalar_t>(in, coefficients, layout, grid, features, densities, triangles,
                              grad_triangles, grad_total, grad_squares, grad_vectors);
  });
}

const Kernel kernel = {ALCHEM_KERNEL_NAME, lanes<float>(), lanes<double>(), &forward, &backward};

}    // namespace ALCHEM_KERNEL_VARIANT
}    // namespace alchem_ops
