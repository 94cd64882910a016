// alchem::power_spectrum, the Alchemical Model's features in one CPU kernel.
//
// For every centre atom i, from its edges (vector r_ij, neighbour element a_j):
//   radial   g_c(r)  = cubic Hermite spline of the tabulated radial functions, with
//                      the compression W[k, a_j] and the scale s_l folded in
//                      (one row of `coefficients` per element and grid interval);
//   angular  Y_lm    = real spherical harmonics (sphericart's recurrence and
//                      normalisation, the same as python/alchem/harmonics.py);
//   density  C_l[m, a] = sum_j Y_lm(r_ij) g_{l,a}(r_ij), a = (k, n);
//   output   the upper triangle of P_l = C_l^T C_l for every l, in the model's
//            order (row-major, l by l), and per atom the sum of the full P and of
//            its squares (the LayerNorm statistics).
// The backward pass gives the gradient with respect to the edge vectors only: the
// op serves inference (MD forces and virials), where the spline table is a
// constant. Training keeps the model's torch operations (parameter gradients,
// double backward).
//
// Why a kernel: in torch operations each of these steps writes and reads
// per-edge tensors ((l_max + 1)^2 = 196 harmonics per edge and 388 radial values),
// and the sums over neighbours are batched products of small matrices that run far
// below the core's speed. Here one atom's work stays in the L1/L2 cache, padded
// neighbour slots and the lower triangle of P are never computed.
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

namespace {

// x86-64-v3 (AVX2 + FMA) and a baseline clone, chosen when the library loads:
// the same library runs on any x86-64 machine and at full width on recent ones.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ALCHEM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ALCHEM_CLONES
#endif

// Sizes of the model's blocks, from the K n_l channels per l.
struct Layout {
  int64_t max_angular = 0;
  std::vector<int64_t> channels;      // n = K n_l per l
  std::vector<int64_t> columns;       // first radial column of l
  std::vector<int64_t> density;       // first entry of C_l [(2l + 1) x n]
  std::vector<int64_t> triangle;      // first entry of the upper triangle of P_l
  int64_t n_columns = 0, density_size = 0, triangle_size = 0, max_channels = 0;

  explicit Layout(const std::vector<int64_t> &column_sizes) : channels(column_sizes)
  {
    max_angular = static_cast<int64_t>(channels.size()) - 1;
    for (int64_t l = 0; l <= max_angular; l++) {
      int64_t n = channels[l];
      columns.push_back(n_columns);
      density.push_back(density_size);
      triangle.push_back(triangle_size);
      n_columns += n;
      density_size += (2 * l + 1) * n;
      triangle_size += n * (n + 1) / 2;
      max_channels = std::max(max_channels, n);
    }
  }
};

// Where an edge of length r reads the spline table (model.py, `radial`).
struct Grid {
  double cutoff, onset, step_below, step_above;
  int64_t n_below, n_nodes, n_columns;

  // interval index, t in [0, 1] and dt/dr
  template <typename T> void locate(T r, int64_t &interval, T &t, T &dt_dr) const
  {
    bool above = r >= static_cast<T>(onset);
    T x = above ? (r - static_cast<T>(onset)) / static_cast<T>(step_above) + static_cast<T>(n_below)
                : r / static_cast<T>(step_below);
    dt_dr = above ? T(1) / static_cast<T>(step_above) : T(1) / static_cast<T>(step_below);
    interval = static_cast<int64_t>(std::floor(x));
    interval = std::min(std::max(interval, int64_t(0)), n_nodes - 2);
    if (!above) interval = std::min(interval, std::max(n_below - 1, int64_t(0)));
    t = x - static_cast<T>(interval);
  }
};

// F_l^m of sphericart's real harmonics, packed l (l + 1) / 2 + m; m = 0 divided by
// sqrt(2) (harmonics.py, `factors`).
template <typename T> std::vector<T> harmonics_factors(int64_t max_angular)
{
  std::vector<T> factors;
  for (int64_t l = 0; l <= max_angular; l++) {
    for (int64_t m = 0; m <= l; m++) {
      double ratio = 1.0;  // (l - m)! / (l + m)!
      for (int64_t f = l - m + 1; f <= l + m; f++) ratio /= static_cast<double>(f);
      double value = ((m % 2 == 0) ? 1.0 : -1.0) * std::sqrt((2 * l + 1) / (2 * M_PI) * ratio);
      if (m == 0) value /= std::sqrt(2.0);
      factors.push_back(static_cast<T>(value));
    }
  }
  return factors;
}

inline int64_t packed(int64_t l, int64_t m) { return l * (l + 1) / 2 + m; }

// Q_l^m (packed), c_m + i s_m = (x + i y)^m and Y_lm (index l^2 + l + m) at the
// unit vector (x, y, z).
template <typename T> struct Harmonics {
  int64_t L;
  const T *factors;
  std::vector<T> q, c, s, y;

  Harmonics(int64_t max_angular, const T *f)
      : L(max_angular), factors(f), q(packed(max_angular + 1, 0)), c(max_angular + 1),
        s(max_angular + 1), y((max_angular + 1) * (max_angular + 1))
  {
  }

  void compute(T x, T yy, T z)
  {
    c[0] = 1;
    s[0] = 0;
    for (int64_t m = 1; m <= L; m++) {
      c[m] = x * c[m - 1] - yy * s[m - 1];
      s[m] = x * s[m - 1] + yy * c[m - 1];
    }
    q[0] = 1;
    for (int64_t l = 1; l <= L; l++) {
      q[packed(l, l)] = -static_cast<T>(2 * l - 1) * q[packed(l - 1, l - 1)];
      q[packed(l, l - 1)] = -z * q[packed(l, l)];
      for (int64_t m = 0; m + 2 <= l; m++) {
        q[packed(l, m)] = (static_cast<T>(2 * l - 1) * z * q[packed(l - 1, m)] -
                           static_cast<T>(l + m - 1) * q[packed(l - 2, m)]) /
                          static_cast<T>(l - m);
      }
    }
    for (int64_t l = 0; l <= L; l++) {
      T *yl = y.data() + l * l + l;
      const T *fl = factors + packed(l, 0);
      const T *ql = q.data() + packed(l, 0);
      yl[0] = fl[0] * ql[0];
      for (int64_t m = 1; m <= l; m++) {
        T fq = fl[m] * ql[m];
        yl[m] = fq * c[m];
        yl[-m] = fq * s[m];
      }
    }
  }

  // d/dv of sum_lm g_lm Y_lm(v / |v|) at v = r u, from the values of `compute`:
  // with S_lm the solid harmonics (homogeneous of degree l, Y_lm(u) = S_lm(u)),
  // grad Y_lm(v) = (grad S_lm(u) - l Y_lm(u) u) / r, and sphericart's identities
  // dQ_l^m/dx = x Q_{l-1}^{m+1}, dQ_l^m/dy = y Q_{l-1}^{m+1},
  // dQ_l^m/dz = (l + m) Q_{l-1}^m, d(c_m, s_m)/dx = m (c_{m-1}, s_{m-1}),
  // d(c_m, s_m)/dy = m (-s_{m-1}, c_{m-1}).
  void backward(const T *g, T x, T yy, T z, T r, T *gradient) const
  {
    T gx = 0, gy = 0, gz = 0, radial = 0;
    for (int64_t l = 1; l <= L; l++) {
      const T *gl = g + l * l + l;
      const T *yl = y.data() + l * l + l;
      const T *fl = factors + packed(l, 0);
      const T *ql = q.data() + packed(l, 0);
      const T *qp = q.data() + packed(l - 1, 0);  // Q_{l-1}^m, m <= l - 1
      T sum = gl[0] * yl[0];
      // m = 0: S = F Q_l^0
      {
        T q1 = l - 1 >= 1 ? qp[1] : T(0);
        T f = fl[0] * gl[0];
        gx += f * x * q1;
        gy += f * yy * q1;
        gz += f * static_cast<T>(l) * qp[0];
      }
      for (int64_t m = 1; m <= l; m++) {
        sum += gl[m] * yl[m] + gl[-m] * yl[-m];
        T qn = m + 1 <= l - 1 ? qp[m + 1] : T(0);  // Q_{l-1}^{m+1}
        T qz = m <= l - 1 ? qp[m] : T(0);           // Q_{l-1}^m
        T fp = fl[m] * gl[m], fn = fl[m] * gl[-m];
        T mq = static_cast<T>(m) * ql[m];
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

// values (and d/dt) of every radial column at t, from the row's 4 coefficients
template <typename T>
ALCHEM_CLONES void spline(const T *__restrict row, int64_t n, T t, T *__restrict value,
                          T *__restrict slope)
{
  const T *c0 = row, *c1 = row + n, *c2 = row + 2 * n, *c3 = row + 3 * n;
  for (int64_t i = 0; i < n; i++) {
    value[i] = ((c3[i] * t + c2[i]) * t + c1[i]) * t + c0[i];
  }
  if (slope != nullptr) {
    for (int64_t i = 0; i < n; i++) {
      slope[i] = (T(3) * c3[i] * t + T(2) * c2[i]) * t + c1[i];
    }
  }
}

// out[i] += a * x[i]
template <typename T>
ALCHEM_CLONES inline void axpy(int64_t n, T a, const T *__restrict x, T *__restrict out)
{
  for (int64_t i = 0; i < n; i++) out[i] += a * x[i];
}

template <typename T>
ALCHEM_CLONES inline T dot(int64_t n, const T *__restrict x, const T *__restrict y)
{
  T sum = 0;
  for (int64_t i = 0; i < n; i++) sum += x[i] * y[i];
  return sum;
}

// C_l [(2l + 1) x n] += Y_l (x) g_l for every l
template <typename T>
ALCHEM_CLONES void accumulate_density(const Layout &layout, const T *__restrict y,
                                      const T *__restrict g, T *__restrict density)
{
  for (int64_t l = 0; l <= layout.max_angular; l++) {
    int64_t n = layout.channels[l];
    const T *gl = g + layout.columns[l];
    T *cl = density + layout.density[l];
    for (int64_t m = 0; m < 2 * l + 1; m++) {
      T a = y[l * l + m];
      T *row = cl + m * n;
      for (int64_t i = 0; i < n; i++) row[i] += a * gl[i];
    }
  }
}

// upper triangles of C_l^T C_l, and the sums of the full P and of P^2
template <typename T>
ALCHEM_CLONES void power(const Layout &layout, const T *__restrict density, T *__restrict out,
                         T &total, T &squares)
{
  total = 0;
  squares = 0;
  for (int64_t l = 0; l <= layout.max_angular; l++) {
    int64_t n = layout.channels[l];
    const T *cl = density + layout.density[l];
    T *p = out + layout.triangle[l];
    for (int64_t a = 0; a < n; a++) {
      T *row = p;  // P[a, a..n-1]
      int64_t width = n - a;
      for (int64_t i = 0; i < width; i++) row[i] = 0;
      for (int64_t m = 0; m < 2 * l + 1; m++) {
        const T *cm = cl + m * n;
        T ca = cm[a];
        for (int64_t i = 0; i < width; i++) row[i] += ca * cm[a + i];
      }
      T diagonal = row[0];
      T sum = 0, sum2 = 0;
      for (int64_t i = 1; i < width; i++) {
        sum += row[i];
        sum2 += row[i] * row[i];
      }
      total += diagonal + 2 * sum;
      squares += diagonal * diagonal + 2 * sum2;
      p += width;
    }
  }
}

// dL/dC_l = C_l S_l with S_l the symmetric matrix of the gradients on the full P
// (see the derivation in `backward_atom`); `scratch` holds S_l [n x n]
template <typename T>
ALCHEM_CLONES void density_gradient(const Layout &layout, const T *__restrict density,
                                    const T *__restrict triangles, const T *__restrict grad,
                                    T grad_total, T grad_squares, T *__restrict scratch,
                                    T *__restrict out)
{
  for (int64_t l = 0; l <= layout.max_angular; l++) {
    int64_t n = layout.channels[l];
    const T *p = triangles + layout.triangle[l];
    const T *gp = grad + layout.triangle[l];
    for (int64_t a = 0; a < n; a++) {
      for (int64_t b = a; b < n; b++) {
        T value = *gp + 2 * grad_total + 4 * grad_squares * (*p);
        if (a == b) value += *gp;
        scratch[a * n + b] = value;
        scratch[b * n + a] = value;
        gp++;
        p++;
      }
    }
    const T *cl = density + layout.density[l];
    T *dl = out + layout.density[l];
    for (int64_t m = 0; m < 2 * l + 1; m++) {
      const T *cm = cl + m * n;
      T *dm = dl + m * n;
      for (int64_t i = 0; i < n; i++) dm[i] = 0;
      for (int64_t b = 0; b < n; b++) {
        T cb = cm[b];
        const T *sb = scratch + b * n;
        for (int64_t i = 0; i < n; i++) dm[i] += cb * sb[i];
      }
    }
  }
}

// per edge: dL/dY_lm = sum_a dC_l[m, a] g_a and dL/dr = sum_a (sum_m dC_l[m, a] Y_lm) g'_a
template <typename T>
ALCHEM_CLONES T edge_gradient(const Layout &layout, const T *__restrict d_density,
                              const T *__restrict y, const T *__restrict g,
                              const T *__restrict slope, T *__restrict grad_y,
                              T *__restrict scratch)
{
  T d_t = 0;
  for (int64_t l = 0; l <= layout.max_angular; l++) {
    int64_t n = layout.channels[l];
    const T *gl = g + layout.columns[l];
    const T *sl = slope + layout.columns[l];
    const T *dl = d_density + layout.density[l];
    for (int64_t i = 0; i < n; i++) scratch[i] = 0;
    for (int64_t m = 0; m < 2 * l + 1; m++) {
      const T *dm = dl + m * n;
      T sum = 0;
      T a = y[l * l + m];
      for (int64_t i = 0; i < n; i++) {
        sum += dm[i] * gl[i];
        scratch[i] += a * dm[i];
      }
      grad_y[l * l + m] = sum;
    }
    T sum = 0;
    for (int64_t i = 0; i < n; i++) sum += scratch[i] * sl[i];
    d_t += sum;
  }
  return d_t;
}

struct Inputs {
  torch::Tensor vectors, elements, offsets, order;  // edges sorted by centre: order
  int64_t n_atoms;
};

// CSR of the edges by centre (stable, so the sums run in the caller's edge order)
Inputs sort_edges(const torch::Tensor &vectors, const torch::Tensor &elements,
                  const torch::Tensor &centers, int64_t n_atoms)
{
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 3, "alchem::power_spectrum: vectors must be [n_edges, 3]");
  TORCH_CHECK(vectors.device().is_cpu(), "alchem::power_spectrum runs on the CPU only");
  int64_t n_edges = vectors.size(0);
  TORCH_CHECK(elements.size(0) == n_edges && centers.size(0) == n_edges,
              "alchem::power_spectrum: one element and one centre per edge");
  auto centers64 = centers.to(torch::kInt64).contiguous();
  auto counts = torch::zeros({n_atoms + 1}, torch::kInt64);
  auto *c = centers64.data_ptr<int64_t>();
  auto *count = counts.data_ptr<int64_t>();
  for (int64_t e = 0; e < n_edges; e++) {
    TORCH_CHECK(c[e] >= 0 && c[e] < n_atoms, "alchem::power_spectrum: centre ", c[e],
                " out of range [0, ", n_atoms, ")");
    count[c[e] + 1]++;
  }
  for (int64_t i = 0; i < n_atoms; i++) count[i + 1] += count[i];
  auto order = torch::empty({n_edges}, torch::kInt64);
  auto *o = order.data_ptr<int64_t>();
  std::vector<int64_t> next(count, count + n_atoms);
  for (int64_t e = 0; e < n_edges; e++) o[next[c[e]]++] = e;
  return {vectors.contiguous(), elements.to(torch::kInt64).contiguous(), counts, order, n_atoms};
}

template <typename T>
void forward_kernel(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                    const Grid &grid, torch::Tensor &triangles, torch::Tensor &total,
                    torch::Tensor &squares, torch::Tensor &densities)
{
  const T *v = in.vectors.data_ptr<T>();
  const int64_t *el = in.elements.data_ptr<int64_t>();
  const int64_t *offsets = in.offsets.data_ptr<int64_t>();
  const int64_t *order = in.order.data_ptr<int64_t>();
  const T *table = coefficients.data_ptr<T>();
  T *out = triangles.data_ptr<T>();
  T *out_total = total.data_ptr<T>();
  T *out_squares = squares.data_ptr<T>();
  T *out_density = densities.data_ptr<T>();
  auto factors = harmonics_factors<T>(layout.max_angular);
  const int64_t C = layout.n_columns;
  const int64_t rows = coefficients.size(0);

  at::parallel_for(0, in.n_atoms, 1, [&](int64_t begin, int64_t end) {
    Harmonics<T> harmonics(layout.max_angular, factors.data());
    std::vector<T> g(C);
    for (int64_t i = begin; i < end; i++) {
      T *density = out_density + i * layout.density_size;
      std::fill(density, density + layout.density_size, T(0));
      for (int64_t k = offsets[i]; k < offsets[i + 1]; k++) {
        int64_t e = order[k];
        T x = v[3 * e], y = v[3 * e + 1], z = v[3 * e + 2];
        T r = std::sqrt(x * x + y * y + z * z);
        if (!(r < static_cast<T>(grid.cutoff)) || r == T(0)) continue;
        int64_t interval;
        T t, dt_dr;
        grid.locate(r, interval, t, dt_dr);
        int64_t row = el[e] * (grid.n_nodes - 1) + interval;
        TORCH_CHECK(row >= 0 && row < rows, "alchem::power_spectrum: element out of range");
        spline<T>(table + row * 4 * C, C, t, g.data(), nullptr);
        harmonics.compute(x / r, y / r, z / r);
        accumulate_density<T>(layout, harmonics.y.data(), g.data(), density);
      }
      power<T>(layout, density, out + i * layout.triangle_size, out_total[i], out_squares[i]);
    }
  });
}

template <typename T>
void backward_kernel(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                     const Grid &grid, const torch::Tensor &densities,
                     const torch::Tensor &triangles, const torch::Tensor &grad_triangles,
                     const torch::Tensor &grad_total, const torch::Tensor &grad_squares,
                     torch::Tensor &grad_vectors)
{
  const T *v = in.vectors.data_ptr<T>();
  const int64_t *el = in.elements.data_ptr<int64_t>();
  const int64_t *offsets = in.offsets.data_ptr<int64_t>();
  const int64_t *order = in.order.data_ptr<int64_t>();
  const T *table = coefficients.data_ptr<T>();
  const T *dens = densities.data_ptr<T>();
  const T *tri = triangles.data_ptr<T>();
  const T *g_tri = grad_triangles.data_ptr<T>();
  const T *g_total = grad_total.data_ptr<T>();
  const T *g_squares = grad_squares.data_ptr<T>();
  T *out = grad_vectors.data_ptr<T>();
  auto factors = harmonics_factors<T>(layout.max_angular);
  const int64_t C = layout.n_columns;
  const int64_t H = (layout.max_angular + 1) * (layout.max_angular + 1);

  at::parallel_for(0, in.n_atoms, 1, [&](int64_t begin, int64_t end) {
    Harmonics<T> harmonics(layout.max_angular, factors.data());
    std::vector<T> g(C), slope(C), d_density(layout.density_size), grad_y(H);
    std::vector<T> scratch(std::max(layout.max_channels * layout.max_channels, C));
    for (int64_t i = begin; i < end; i++) {
      if (offsets[i] == offsets[i + 1]) continue;
      // The loss depends on the full symmetric P_l through the triangle t
      // (t_ab = P_ab, a <= b), total = sum_ab P_ab and squares = sum_ab P_ab^2.
      // With H_ab = dL/dP_ab symmetrised, dL/dC = 2 C H =: C S, where
      // S_ab = g_ab (a < b), 2 g_aa (a = b), + 2 g_total + 4 g_squares P_ab.
      density_gradient<T>(layout, dens + i * layout.density_size, tri + i * layout.triangle_size,
                          g_tri + i * layout.triangle_size, g_total[i], g_squares[i],
                          scratch.data(), d_density.data());
      for (int64_t k = offsets[i]; k < offsets[i + 1]; k++) {
        int64_t e = order[k];
        T x = v[3 * e], y = v[3 * e + 1], z = v[3 * e + 2];
        T r = std::sqrt(x * x + y * y + z * z);
        if (!(r < static_cast<T>(grid.cutoff)) || r == T(0)) continue;
        int64_t interval;
        T t, dt_dr;
        grid.locate(r, interval, t, dt_dr);
        int64_t row = el[e] * (grid.n_nodes - 1) + interval;
        spline<T>(table + row * 4 * C, C, t, g.data(), slope.data());
        T ux = x / r, uy = y / r, uz = z / r;
        harmonics.compute(ux, uy, uz);
        T d_t = edge_gradient<T>(layout, d_density.data(), harmonics.y.data(), g.data(),
                                 slope.data(), grad_y.data(), scratch.data());
        T gradient[3];
        harmonics.backward(grad_y.data(), ux, uy, uz, r, gradient);
        T d_r = d_t * dt_dr;
        out[3 * e] = gradient[0] + d_r * ux;
        out[3 * e + 1] = gradient[1] + d_r * uy;
        out[3 * e + 2] = gradient[2] + d_r * uz;
      }
    }
  });
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PowerSpectrum : public torch::autograd::Function<PowerSpectrum> {
public:
  static variable_list forward(AutogradContext *ctx, torch::Tensor vectors,
                               torch::Tensor elements, torch::Tensor centers, int64_t n_atoms,
                               torch::Tensor coefficients, std::vector<int64_t> column_sizes,
                               double cutoff, double onset, double step_below, double step_above,
                               int64_t n_below, int64_t n_nodes)
  {
    Layout layout(column_sizes);
    TORCH_CHECK(coefficients.dim() == 3 && coefficients.size(1) == 4 &&
                    coefficients.size(2) == layout.n_columns,
                "alchem::power_spectrum: coefficients must be [rows, 4, ", layout.n_columns, "]");
    TORCH_CHECK(coefficients.scalar_type() == vectors.scalar_type(),
                "alchem::power_spectrum: vectors and coefficients must have the same dtype");
    TORCH_CHECK(!coefficients.requires_grad(),
                "alchem::power_spectrum gives no gradient for the spline table (inference only)");
    Grid grid{cutoff, onset, step_below, step_above, n_below, n_nodes, layout.n_columns};
    auto inputs = sort_edges(vectors, elements, centers, n_atoms);
    auto table = coefficients.contiguous();
    auto options = vectors.options();
    auto triangles = torch::empty({n_atoms, layout.triangle_size}, options);
    auto total = torch::empty({n_atoms}, options);
    auto squares = torch::empty({n_atoms}, options);
    auto densities = torch::empty({n_atoms, layout.density_size}, options);
    AT_DISPATCH_FLOATING_TYPES(vectors.scalar_type(), "alchem::power_spectrum", [&] {
      forward_kernel<scalar_t>(inputs, table, layout, grid, triangles, total, squares, densities);
    });
    ctx->save_for_backward({inputs.vectors, inputs.elements, inputs.offsets, inputs.order, table,
                            densities, triangles});
    ctx->saved_data["n_atoms"] = n_atoms;
    ctx->saved_data["column_sizes"] = column_sizes;
    ctx->saved_data["grid"] = std::vector<double>{cutoff, onset, step_below, step_above};
    ctx->saved_data["nodes"] = std::vector<int64_t>{n_below, n_nodes};
    return {triangles, total, squares};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grad_outputs)
  {
    TORCH_CHECK(!torch::GradMode::is_enabled(),
                "alchem::power_spectrum has no second derivatives: train with the model in "
                "training mode (its torch operations), not through this inference kernel");
    auto saved = ctx->get_saved_variables();
    Inputs inputs{saved[0], saved[1], saved[2], saved[3], ctx->saved_data["n_atoms"].toInt()};
    Layout layout(ctx->saved_data["column_sizes"].toIntVector());
    auto g = ctx->saved_data["grid"].toDoubleVector();
    auto nodes = ctx->saved_data["nodes"].toIntVector();
    Grid grid{g[0], g[1], g[2], g[3], nodes[0], nodes[1], layout.n_columns};
    auto options = inputs.vectors.options();
    auto fill = [&](const torch::Tensor &grad, at::IntArrayRef shape) {
      return grad.defined() ? grad.contiguous() : torch::zeros(shape, options);
    };
    auto grad_triangles = fill(grad_outputs[0], {inputs.n_atoms, layout.triangle_size});
    auto grad_total = fill(grad_outputs[1], {inputs.n_atoms});
    auto grad_squares = fill(grad_outputs[2], {inputs.n_atoms});
    auto grad_vectors = torch::zeros_like(inputs.vectors);
    AT_DISPATCH_FLOATING_TYPES(inputs.vectors.scalar_type(), "alchem::power_spectrum_backward",
                               [&] {
                                 backward_kernel<scalar_t>(inputs, saved[4], layout, grid,
                                                           saved[5], saved[6], grad_triangles,
                                                           grad_total, grad_squares,
                                                           grad_vectors);
                               });
    variable_list result(12);
    result[0] = grad_vectors;
    return result;
  }
};

std::vector<torch::Tensor> power_spectrum(torch::Tensor vectors, torch::Tensor elements,
                                          torch::Tensor centers, int64_t n_atoms,
                                          torch::Tensor coefficients,
                                          std::vector<int64_t> column_sizes, double cutoff,
                                          double onset, double step_below, double step_above,
                                          int64_t n_below, int64_t n_nodes)
{
  return PowerSpectrum::apply(vectors, elements, centers, n_atoms, coefficients, column_sizes,
                              cutoff, onset, step_below, step_above, n_below, n_nodes);
}

}  // namespace

TORCH_LIBRARY(alchem, m)
{
  m.def("power_spectrum(Tensor vectors, Tensor elements, Tensor centers, int n_atoms, "
        "Tensor coefficients, int[] column_sizes, float cutoff, float onset, "
        "float step_below, float step_above, int n_below, int n_nodes) -> Tensor[]",
        &power_spectrum);
}
