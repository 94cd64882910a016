// Shared by the operator (alchemical_ops.cpp) and the kernel, which is compiled
// once per instruction set (kernel.h): block sizes, the spline grid, the edges.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace alchem_ops {

inline int64_t round_up(int64_t value, int64_t multiple)
{
  return (value + multiple - 1) / multiple * multiple;
}

// Sizes of the model's blocks, from the K n_l channels per l. Inside the kernel
// the channels of every l are padded to a multiple of `pad` (the lanes of a
// vector) so that the small matrix products below need no remainder loops.
struct Layout {
  int64_t max_angular = 0;
  std::vector<int64_t> channels;          // n = K n_l per l
  std::vector<int64_t> columns;           // first radial column of l
  std::vector<int64_t> padded;            // npad, n rounded up to `pad`
  std::vector<int64_t> padded_offsets;    // sum of npad over the l before
  std::vector<int64_t> density;           // first entry of C_l [(2l + 1) x npad]
  std::vector<int64_t> triangle;          // first entry of the upper triangle of P_l
  int64_t n_columns = 0, padded_columns = 0, density_size = 0, triangle_size = 0;
  int64_t max_padded = 0;

  Layout(const std::vector<int64_t> &column_sizes, int64_t pad) : channels(column_sizes)
  {
    max_angular = static_cast<int64_t>(channels.size()) - 1;
    for (int64_t l = 0; l <= max_angular; l++) {
      int64_t n = channels[l];
      int64_t npad = round_up(n, pad);
      columns.push_back(n_columns);
      padded.push_back(npad);
      padded_offsets.push_back(padded_columns);
      density.push_back(density_size);
      triangle.push_back(triangle_size);
      n_columns += n;
      padded_columns += npad;
      density_size += (2 * l + 1) * npad;
      triangle_size += n * (n + 1) / 2;
      max_padded = std::max(max_padded, npad);
    }
  }
};

// Where an edge of length r reads the spline table (model.py, `radial`).
struct Grid {
  double cutoff, onset, step_below, step_above;
  int64_t n_below, n_nodes;

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

// The edges grouped by centre (CSR: offsets, and order, a stable sort, so that
// the sums run in the caller's edge order).
struct Inputs {
  torch::Tensor vectors, elements, offsets, order;
  int64_t n_atoms;
};

// What differs between the architectures that use the kernel.
struct Features {
  // [triangle entries]: the LayerNorm statistics are sum_t w_t t and
  // sum_t w2_t t^2 over the upper triangles t (how often, and with which scale,
  // each entry appears among the model's features)
  torch::Tensor total_weights, square_weights;
  // the centre's own density, added to C_0: row center_species[i] of
  // center_density [species, K n_0] (both empty: none)
  torch::Tensor center_species, center_density;
  // per-edge factor of every radial function, f(r) = shifted cosine (width
  // `smooth_width`) x rate / (rate + (r / scale)^exponent); smooth_width <= 0: none,
  // exponent 0: no second factor
  double smooth_width = 0, rate = 1, scale = 1, exponent = 0;

  template <typename T> void factor(T r, double cutoff, T &value, T &derivative) const
  {
    value = 1;
    derivative = 0;
    if (smooth_width <= 0) return;
    T width = static_cast<T>(smooth_width);
    T x = (r - static_cast<T>(cutoff) + width) / width;
    if (x >= 1) {
      value = 0;
      return;
    }
    if (x > 0) {
      value = T(0.5) * (1 + std::cos(static_cast<T>(M_PI) * x));
      derivative = T(-0.5) * static_cast<T>(M_PI) / width * std::sin(static_cast<T>(M_PI) * x);
    }
    if (exponent != 0) {
      T y = r / static_cast<T>(scale);
      T power = std::pow(y, static_cast<T>(exponent));
      T denominator = static_cast<T>(rate) + power;
      T u = static_cast<T>(rate) / denominator;
      T du = -static_cast<T>(rate * exponent) * std::pow(y, static_cast<T>(exponent - 1)) /
             static_cast<T>(scale) / (denominator * denominator);
      derivative = derivative * u + value * du;
      value = value * u;
    }
  }
};

// Per-edge pieces of the gradient with respect to the spline table (training),
// in the sorted edge order: edge e adds alpha_e[x] t_e^p + beta_e[x] p t_e^(p-1) to
// table[row_e, p, x]; row_e = -1 for edges that contribute nothing. rows, t:
// [edges]; alpha, beta: [edges, C] (beta undefined: none).
struct TableGradient {
  torch::Tensor rows, t, alpha, beta;
};

// One build of the kernel (kernel.h) for one instruction set; `lanes`: the
// padding of its blocks for float and double (Layout's `pad`).
struct Kernel {
  const char *name;
  int64_t float_lanes, double_lanes;
  void (*forward)(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                  const Grid &grid, const Features &features, torch::Tensor &triangles,
                  torch::Tensor &total, torch::Tensor &squares, torch::Tensor &densities);
  // grad_vectors undefined: not computed; table_gradient nullptr: not computed
  void (*backward)(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                   const Grid &grid, const Features &features, const torch::Tensor &densities,
                   const torch::Tensor &triangles, const torch::Tensor &grad_triangles,
                   const torch::Tensor &grad_total, const torch::Tensor &grad_squares,
                   torch::Tensor &grad_vectors, TableGradient *table_gradient);
  // the backward differentiated along `direction` (dL/d(grad_vectors)): the
  // gradients on its inputs grad_triangles, grad_total, grad_squares and the table's
  void (*double_backward)(const Inputs &in, const torch::Tensor &coefficients, const Layout &layout,
                          const Grid &grid, const Features &features,
                          const torch::Tensor &densities, const torch::Tensor &triangles,
                          const torch::Tensor &grad_triangles, const torch::Tensor &grad_total,
                          const torch::Tensor &grad_squares, const torch::Tensor &direction,
                          torch::Tensor &gg_triangles, torch::Tensor &gg_total,
                          torch::Tensor &gg_squares, TableGradient &table_gradient);
  // sums the per-edge pieces into the gradient of the table [rows, 4, C] or, with
  // `weights` defined, of its factors base [G - 1, 4, C] and weights [S, C]
  // (kernel.h, table_gradient_kernel; zeros on entry)
  void (*table_gradient)(const TableGradient &pieces, const torch::Tensor &base,
                         const torch::Tensor &weights, torch::Tensor &grad_base,
                         torch::Tensor &grad_weights);
};

namespace baseline {
extern const Kernel kernel;    // any CPU: 16-byte vectors (SSE2 on x86-64, NEON on arm64)
}
namespace x86_64_v3 {
extern const Kernel kernel;    // AVX2 + FMA: 32-byte vectors
}

}    // namespace alchem_ops
