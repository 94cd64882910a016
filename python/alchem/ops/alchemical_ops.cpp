// alchem::power_spectrum, the features of both architectures in one CPU kernel
// (SOAP-BPNN: channels (element, n), see soap_bpnn/model.py, `_init_kernel`).
//
// For every centre atom i, from its edges (vector r_ij, neighbour element a_j):
//   radial   g_c(r)  = cubic Hermite spline of the tabulated radial functions, with
//                      the compression W[k, a_j] and the scale s_l folded in
//                      (one row of `coefficients` per element and grid interval);
//   angular  Y_lm    = real spherical harmonics (sphericart's recurrence and
//                      normalisation, the same as python/alchem/harmonics.py);
//   density  C_l[m, a] = sum_j Y_lm(r_ij) g_{l,a}(r_ij), a = (k, n);
//   output   the upper triangle of P_l = C_l^T C_l for every l, in the model's
//            order (row-major, l by l), and per atom the weighted sums of its
//            entries and of their squares (the LayerNorm statistics, Features).
// The backward pass gives the gradient with respect to the edge vectors (MD forces
// and virials) and to the spline table (training), and is itself differentiable in
// the table and in the gradients it receives (training on forces: the double
// backward), not in the vectors. alchem::power_spectrum_factored (training the
// Alchemical Model) takes the table as a spline per grid interval times weights per
// element and column, and gives the gradients of both factors.
//
// Why a kernel: in torch operations each of these steps writes and reads
// per-edge tensors ((l_max + 1)^2 = 196 harmonics per edge and 388 radial values),
// and the sums over neighbours are batched products of small matrices that run far
// below the core's speed. Here one atom's work stays in the L1/L2 cache, padded
// neighbour slots and the lower triangle of P are never computed.
#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernel_common.h"

namespace {

using alchem_ops::Features;
using alchem_ops::Grid;
using alchem_ops::Inputs;
using alchem_ops::Kernel;
using alchem_ops::Layout;
using alchem_ops::TableGradient;

Inputs sort_edges(const torch::Tensor &vectors, const torch::Tensor &elements,
                  const torch::Tensor &centers, int64_t n_atoms)
{
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 3,
              "alchem::power_spectrum: vectors must be [n_edges, 3]");
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

// The build of the kernel for this CPU: x86-64-v3 (AVX2 + FMA) where the CPU has
// it and the library was built with it, the baseline otherwise;
// ALCHEM_KERNEL=baseline in the environment forces the baseline (tests).
const Kernel &kernel()
{
  static const Kernel *chosen = [] {
    const char *forced = std::getenv("ALCHEM_KERNEL");
    bool baseline_only = forced != nullptr && std::strcmp(forced, "baseline") == 0;
#ifdef ALCHEM_HAS_X86_64_V3
    if (!baseline_only && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return &alchem_ops::x86_64_v3::kernel;
    }
#endif
    (void)baseline_only;
    return &alchem_ops::baseline::kernel;
  }();
  return *chosen;
}

int64_t padding(torch::ScalarType dtype)
{
  TORCH_CHECK(dtype == torch::kFloat || dtype == torch::kDouble,
              "alchem::power_spectrum: float32 or float64 only, got ", dtype);
  return dtype == torch::kFloat ? kernel().float_lanes : kernel().double_lanes;
}

// smooth: [width, rate, scale, exponent] of Features (width <= 0: no factor)
void set_smooth(Features &features, const std::vector<double> &smooth)
{
  TORCH_CHECK(smooth.size() == 4,
              "alchem::power_spectrum: smooth must be [width, rate, scale, exponent]");
  features.smooth_width = smooth[0];
  features.rate = smooth[1];
  features.scale = smooth[2];
  features.exponent = smooth[3];
}

Features make_features(const torch::Tensor &total_weights, const torch::Tensor &square_weights,
                       const torch::Tensor &center_species, const torch::Tensor &center_density,
                       const std::vector<double> &smooth, const torch::Tensor &vectors,
                       const Layout &layout, int64_t n_atoms)
{
  Features features;
  for (const auto *weights : {&total_weights, &square_weights}) {
    TORCH_CHECK(weights->dim() == 1 && weights->size(0) == layout.triangle_size &&
                    weights->scalar_type() == vectors.scalar_type(),
                "alchem::power_spectrum: weights must be [", layout.triangle_size,
                "] of the vectors' dtype");
  }
  features.total_weights = total_weights.contiguous();
  features.square_weights = square_weights.contiguous();
  if (center_density.numel() > 0) {
    TORCH_CHECK(center_density.dim() == 2 && center_density.size(1) == layout.channels[0] &&
                    center_density.scalar_type() == vectors.scalar_type(),
                "alchem::power_spectrum: center_density must be [species, ", layout.channels[0],
                "]");
    TORCH_CHECK(center_species.dim() == 1 && center_species.size(0) >= n_atoms,
                "alchem::power_spectrum: one center_species per atom");
    auto species = center_species.slice(0, 0, n_atoms).to(torch::kInt64).contiguous();
    TORCH_CHECK(n_atoms == 0 || (species.min().item<int64_t>() >= 0 &&
                                 species.max().item<int64_t>() < center_density.size(0)),
                "alchem::power_spectrum: center_species out of range");
    features.center_species = species;
    features.center_density = center_density.contiguous();
  }
  set_smooth(features, smooth);
  return features;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Grid make_grid(const std::vector<double> &g, const std::vector<int64_t> &nodes)
{
  return Grid{g[0], g[1], g[2], g[3], nodes[0], nodes[1]};
}

// what a backward pass needs beyond its tensors, kept in an AutogradContext
struct Settings {
  int64_t n_atoms;
  std::vector<int64_t> column_sizes;
  std::vector<double> grid, smooth;
  std::vector<int64_t> nodes;

  void save(AutogradContext *ctx) const
  {
    ctx->saved_data["n_atoms"] = n_atoms;
    ctx->saved_data["column_sizes"] = column_sizes;
    ctx->saved_data["grid"] = grid;
    ctx->saved_data["nodes"] = nodes;
    ctx->saved_data["smooth"] = smooth;
  }

  static Settings load(AutogradContext *ctx)
  {
    return {ctx->saved_data["n_atoms"].toInt(), ctx->saved_data["column_sizes"].toIntVector(),
            ctx->saved_data["grid"].toDoubleVector(), ctx->saved_data["smooth"].toDoubleVector(),
            ctx->saved_data["nodes"].toIntVector()};
  }
};

Features weights_only(const torch::Tensor &total_weights, const torch::Tensor &square_weights,
                      const std::vector<double> &smooth)
{
  Features features;
  features.total_weights = total_weights;
  features.square_weights = square_weights;
  set_smooth(features, smooth);
  return features;
}

TableGradient edge_pieces(const torch::Tensor &vectors, const Layout &layout, bool with_beta)
{
  int64_t n_edges = vectors.size(0);
  auto options = vectors.options();
  // every entry is written by the kernel (each edge belongs to one atom)
  TableGradient pieces;
  pieces.rows = torch::empty({n_edges}, torch::kInt64);
  pieces.t = torch::empty({n_edges}, options);
  pieces.alpha = torch::empty({n_edges, layout.n_columns}, options);
  if (with_beta) pieces.beta = torch::empty({n_edges, layout.n_columns}, options);
  return pieces;
}

// The gradients of the table's source: the table itself [rows, 4, C], or its factors
// base [G - 1, 4, C] and weights [S, C] (`weights` defined; kernel.h,
// table_gradient_kernel); empty tensors where not wanted.
std::pair<torch::Tensor, torch::Tensor> source_gradients(const TableGradient &pieces,
                                                         const torch::Tensor &coefficients,
                                                         const torch::Tensor &weights,
                                                         bool want_coefficients, bool want_weights)
{
  bool factored = weights.numel() > 0;
  if (!want_coefficients && !(factored && want_weights)) {
    return {torch::empty({0}, coefficients.options()), torch::empty({0}, coefficients.options())};
  }
  // the kernel reads and writes contiguous memory (the inputs may be views)
  auto grad_coefficients = torch::zeros(coefficients.sizes(), coefficients.options());
  auto grad_weights = factored ? torch::zeros(weights.sizes(), weights.options()) : torch::Tensor();
  kernel().table_gradient(pieces, coefficients.contiguous(),
                          factored ? weights.contiguous() : torch::Tensor(), grad_coefficients,
                          grad_weights);
  if (!want_coefficients) grad_coefficients = torch::empty({0}, coefficients.options());
  if (!factored || !want_weights) grad_weights = torch::empty({0}, coefficients.options());
  return {grad_coefficients, grad_weights};
}

// The gradient of the features (the backward pass of PowerSpectrum) as a function
// of the gradient on them, the vectors and the table's source: differentiable, so
// that a loss on the forces trains the table (training's double backward). Its own
// backward gives no gradient to the vectors (second derivatives in the positions),
// which training never asks for.
class PowerSpectrumBackward : public torch::autograd::Function<PowerSpectrumBackward> {
 public:
  // tensors: 0-5 differentiable (grad_triangles, grad_total, grad_squares, vectors,
  // coefficients, weights), then the constants of the forward pass (`table`: the
  // full table the kernels read)
  static variable_list forward(AutogradContext *ctx, torch::Tensor grad_triangles,
                               torch::Tensor grad_total, torch::Tensor grad_squares,
                               torch::Tensor vectors, torch::Tensor coefficients,
                               torch::Tensor weights, torch::Tensor table, torch::Tensor elements,
                               torch::Tensor offsets, torch::Tensor order, torch::Tensor densities,
                               torch::Tensor triangles, torch::Tensor total_weights,
                               torch::Tensor square_weights, Settings settings,
                               std::vector<bool> wanted)
  {
    Inputs inputs{vectors.contiguous(), elements, offsets, order, settings.n_atoms};
    Layout layout(settings.column_sizes, padding(vectors.scalar_type()));
    Grid grid = make_grid(settings.grid, settings.nodes);
    auto features = weights_only(total_weights, square_weights, settings.smooth);
    bool want_vectors = wanted[0], want_table = wanted[1] || wanted[2];
    torch::Tensor grad_vectors;
    if (want_vectors) grad_vectors = torch::zeros_like(inputs.vectors);
    TableGradient pieces;
    if (want_table) pieces = edge_pieces(vectors, layout, false);
    kernel().backward(inputs, table, layout, grid, features, densities, triangles, grad_triangles,
                      grad_total, grad_squares, grad_vectors, want_table ? &pieces : nullptr);
    auto source = source_gradients(pieces, coefficients, weights, wanted[1], wanted[2]);
    // outputs must be tensors: an empty one for the vectors' if not asked for
    if (!want_vectors) grad_vectors = torch::empty({0}, vectors.options());
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({grad_triangles, grad_total, grad_squares, vectors, coefficients,
                            weights, table, elements, offsets, order, densities, triangles,
                            total_weights, square_weights});
    settings.save(ctx);
    return {grad_vectors, source.first, source.second};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grad_outputs)
  {
    TORCH_CHECK(!ctx->needs_input_grad(3),
                "alchem::power_spectrum gives no second derivatives with respect to the edge "
                "vectors (training differentiates forces with respect to the parameters only)");
    TORCH_CHECK(!grad_outputs[1].defined() && !grad_outputs[2].defined(),
                "alchem::power_spectrum: the gradient of the spline table's gradient is not "
                "implemented");
    variable_list result(16);
    if (!grad_outputs[0].defined()) return result;
    auto saved = ctx->get_saved_variables();
    auto settings = Settings::load(ctx);
    Inputs inputs{saved[3].contiguous(), saved[7], saved[8], saved[9], settings.n_atoms};
    Layout layout(settings.column_sizes, padding(saved[3].scalar_type()));
    Grid grid = make_grid(settings.grid, settings.nodes);
    auto features = weights_only(saved[12], saved[13], settings.smooth);
    auto direction = grad_outputs[0].contiguous();
    auto options = direction.options();
    // written for every atom by the kernel
    auto gg_triangles = torch::empty({settings.n_atoms, layout.triangle_size}, options);
    auto gg_total = torch::empty({settings.n_atoms}, options);
    auto gg_squares = torch::empty({settings.n_atoms}, options);
    auto pieces = edge_pieces(inputs.vectors, layout, true);
    kernel().double_backward(inputs, saved[6], layout, grid, features, saved[10], saved[11],
                             saved[0], saved[1], saved[2], direction, gg_triangles, gg_total,
                             gg_squares, pieces);
    result[0] = gg_triangles;
    result[1] = gg_total;
    result[2] = gg_squares;
    bool want_coefficients = ctx->needs_input_grad(4), want_weights = ctx->needs_input_grad(5);
    auto source = source_gradients(pieces, saved[4], saved[5], want_coefficients, want_weights);
    if (want_coefficients) result[4] = source.first;
    if (want_weights) result[5] = source.second;
    return result;
  }
};

// The features (alchemical_ops.cpp's header). `coefficients` is the spline table
// [rows, 4, C], rows = element x interval, or with `weights` [S, C] given (not empty)
// its factor per interval [G - 1, 4, C]: then row a (G - 1) + g of the table is
// coefficients[g] * weights[a] (the Alchemical Model in training: the radial
// functions' spline times W, whose gradients the kernel then gives directly).
class PowerSpectrum : public torch::autograd::Function<PowerSpectrum> {
 public:
  static variable_list forward(AutogradContext *ctx, torch::Tensor vectors, torch::Tensor elements,
                               torch::Tensor centers, int64_t n_atoms, torch::Tensor coefficients,
                               torch::Tensor weights, std::vector<int64_t> column_sizes,
                               double cutoff, double onset, double step_below, double step_above,
                               int64_t n_below, int64_t n_nodes, torch::Tensor total_weights,
                               torch::Tensor square_weights, torch::Tensor center_species,
                               torch::Tensor center_density, std::vector<double> smooth)
  {
    Layout layout(column_sizes, padding(vectors.scalar_type()));
    TORCH_CHECK(coefficients.dim() == 3 && coefficients.size(1) == 4 &&
                    coefficients.size(2) == layout.n_columns,
                "alchem::power_spectrum: coefficients must be [rows, 4, ", layout.n_columns, "]");
    TORCH_CHECK(coefficients.scalar_type() == vectors.scalar_type(),
                "alchem::power_spectrum: vectors and coefficients must have the same dtype");
    TORCH_CHECK(!center_density.requires_grad() && !total_weights.requires_grad() &&
                    !square_weights.requires_grad(),
                "alchem::power_spectrum gives gradients for the vectors and the spline table "
                "only");
    // the inputs themselves are saved (the double backward's gradients reach them
    // through their graph); the kernels read a contiguous table
    auto table = coefficients.contiguous();
    if (weights.numel() > 0) {
      TORCH_CHECK(weights.dim() == 2 && weights.size(1) == layout.n_columns &&
                      coefficients.size(0) == n_nodes - 1 &&
                      weights.scalar_type() == vectors.scalar_type(),
                  "alchem::power_spectrum_factored: coefficients must be [", n_nodes - 1,
                  ", 4, C] and weights [species, ", layout.n_columns, "]");
      // weights contiguous first: the product then comes out contiguous (no copy)
      table =
          (coefficients.contiguous().unsqueeze(0) * weights.contiguous().unsqueeze(1).unsqueeze(1))
              .reshape({-1, 4, layout.n_columns});
    }
    Grid grid{cutoff, onset, step_below, step_above, n_below, n_nodes};
    auto inputs = sort_edges(vectors, elements, centers, n_atoms);
    auto features = make_features(total_weights, square_weights, center_species, center_density,
                                  smooth, vectors, layout, n_atoms);
    auto options = vectors.options();
    auto triangles = torch::empty({n_atoms, layout.triangle_size}, options);
    auto total = torch::empty({n_atoms}, options);
    auto squares = torch::empty({n_atoms}, options);
    auto densities = torch::empty({n_atoms, layout.density_size}, options);
    kernel().forward(inputs, table, layout, grid, features, triangles, total, squares, densities);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({vectors, inputs.elements, inputs.offsets, inputs.order, coefficients,
                            weights, table, densities, triangles, features.total_weights,
                            features.square_weights});
    Settings{
        n_atoms, column_sizes, {cutoff, onset, step_below, step_above}, smooth, {n_below, n_nodes}}
        .save(ctx);
    return {triangles, total, squares};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grad_outputs)
  {
    auto saved = ctx->get_saved_variables();
    auto settings = Settings::load(ctx);
    Layout layout(settings.column_sizes, padding(saved[0].scalar_type()));
    auto options = saved[0].options();
    auto fill = [&](const torch::Tensor &grad, at::IntArrayRef shape) {
      return grad.defined() ? grad.contiguous() : torch::zeros(shape, options);
    };
    auto grad_triangles = fill(grad_outputs[0], {settings.n_atoms, layout.triangle_size});
    auto grad_total = fill(grad_outputs[1], {settings.n_atoms});
    auto grad_squares = fill(grad_outputs[2], {settings.n_atoms});
    // tensor inputs: vectors 0, elements 1, centers 2, coefficients 3, weights 4, ...
    std::vector<bool> wanted{ctx->needs_input_grad(0), ctx->needs_input_grad(3),
                             ctx->needs_input_grad(4)};
    // detached: the outputs of this pass must not keep the forward's graph alive
    auto grads = PowerSpectrumBackward::apply(grad_triangles, grad_total, grad_squares, saved[0],
                                              saved[4], saved[5], saved[6].detach(), saved[1],
                                              saved[2], saved[3], saved[7], saved[8].detach(),
                                              saved[9], saved[10], settings, wanted);
    variable_list result(18);
    if (wanted[0]) result[0] = grads[0];
    if (wanted[1]) result[4] = grads[1];
    if (wanted[2]) result[5] = grads[2];
    return result;
  }
};

std::vector<torch::Tensor>
power_spectrum(torch::Tensor vectors, torch::Tensor elements, torch::Tensor centers,
               int64_t n_atoms, torch::Tensor coefficients, std::vector<int64_t> column_sizes,
               double cutoff, double onset, double step_below, double step_above, int64_t n_below,
               int64_t n_nodes, torch::Tensor total_weights, torch::Tensor square_weights,
               torch::Tensor center_species, torch::Tensor center_density,
               std::vector<double> smooth)
{
  return PowerSpectrum::apply(vectors, elements, centers, n_atoms, coefficients,
                              torch::empty({0}, coefficients.options()), column_sizes, cutoff,
                              onset, step_below, step_above, n_below, n_nodes, total_weights,
                              square_weights, center_species, center_density, smooth);
}

std::vector<torch::Tensor>
power_spectrum_factored(torch::Tensor vectors, torch::Tensor elements, torch::Tensor centers,
                        int64_t n_atoms, torch::Tensor coefficients, torch::Tensor weights,
                        std::vector<int64_t> column_sizes, double cutoff, double onset,
                        double step_below, double step_above, int64_t n_below, int64_t n_nodes,
                        torch::Tensor total_weights, torch::Tensor square_weights,
                        std::vector<double> smooth)
{
  TORCH_CHECK(weights.numel() > 0, "alchem::power_spectrum_factored: weights are empty");
  auto none = torch::empty({0}, coefficients.options());
  return PowerSpectrum::apply(vectors, elements, centers, n_atoms, coefficients, weights,
                              column_sizes, cutoff, onset, step_below, step_above, n_below, n_nodes,
                              total_weights, square_weights, torch::empty({0}, torch::kInt64), none,
                              smooth);
}

}    // namespace

TORCH_LIBRARY(alchem, m)
{
  m.def("power_spectrum(Tensor vectors, Tensor elements, Tensor centers, int n_atoms, "
        "Tensor coefficients, int[] column_sizes, float cutoff, float onset, "
        "float step_below, float step_above, int n_below, int n_nodes, Tensor total_weights, "
        "Tensor square_weights, Tensor center_species, Tensor center_density, float[] smooth) "
        "-> Tensor[]",
        &power_spectrum);
  // training (not called by exported models): the table as the product of a spline per
  // interval and per-element column weights, whose gradients it gives
  m.def("power_spectrum_factored(Tensor vectors, Tensor elements, Tensor centers, "
        "int n_atoms, Tensor coefficients, Tensor weights, int[] column_sizes, float cutoff, "
        "float onset, float step_below, float step_above, int n_below, int n_nodes, "
        "Tensor total_weights, Tensor square_weights, float[] smooth) -> Tensor[]",
        &power_spectrum_factored);
  m.def("kernel_name() -> str", [] { return std::string(kernel().name); });
}
