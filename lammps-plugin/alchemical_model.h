// Torch-side half of `pair_style alchemical`: loads a metatomic model and runs
// it on arrays prepared by PairAlchemical. This header includes no torch and no
// LAMMPS header (their bundled copies of {fmt} must not meet in one translation
// unit); every failure is reported as a std::exception with a message meant for
// the user, which PairAlchemical forwards to LAMMPS' error handling.
#ifndef ALCHEM_LAMMPS_ALCHEMICAL_MODEL_H
#define ALCHEM_LAMMPS_ALCHEMICAL_MODEL_H

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace alchem {

struct ModelData;

/// One neighbour list the model asked for, in the engine's length unit.
struct NeighborListRequest {
  double cutoff = 0.0;        // engine length unit
  bool full_list = true;      // false: every pair once
  std::string description;    // for the log
};

/// Pairs of one neighbour list for one evaluation. `samples` holds n_pairs rows
/// of (first_atom, second_atom, 0, 0, 0), atoms numbered as in `positions`
/// (ghosts are explicit images: no cell shifts). The pair vectors
/// r_second - r_first are computed from the positions on the model device, so
/// only positions travel to a GPU. When `samples_changed` is false, the samples
/// are the same as in the previous call and the cached metadata is reused.
struct PairsInput {
  const int32_t *samples = nullptr;
  int64_t n_pairs = 0;
  bool samples_changed = true;
};

struct EvaluationInput {
  int64_t n_local = 0;                  // atoms 0..n_local-1 are "owned": the energy is theirs
  int64_t n_total = 0;                  // owned + ghosts
  const double *positions = nullptr;    // n_total x 3
  const int32_t *types = nullptr;       // n_total atomic numbers
  std::vector<PairsInput> pairs;        // one per neighbor_lists() entry
  bool per_atom_energy = false;
  bool need_gradients = true;
  // also return dE/dr of every pair (per-atom virials need them); otherwise
  // the pair gradients are folded into position_gradients on the model device
  // and only n_total x 3 numbers come back
  bool pair_gradients = false;
  // evaluate the owned atoms in chunks of at most this many selected atoms,
  // each with its own forward and backward pass, gradients summed (<= 0: all
  // at once). Exact, the energy being a sum over the selected atoms; bounds
  // the model's temporaries.
  int64_t chunk = 0;
  // also request the model's uncertainty (has_uncertainty() models only):
  // energy_uncertainty per owned atom and alchem::energy_uncertainty_projection
  // of the owned atoms, in the same forward pass; false: the energy only, as
  // without uncertainty (nothing extra computed)
  bool uncertainty = false;
};

struct EvaluationOutput {
  double energy = 0.0;                  // summed over owned atoms
  std::vector<double> atom_energies;    // n_local, when per_atom_energy
  // dE/dr for each pair of each neighbour list (n_pairs x 3), when
  // input.pair_gradients; nullptr when not asked or when the energy does not
  // depend on that list. Valid until the next compute().
  std::vector<const double *> pair_gradients;
  // dE/dx (n_total x 3): the direct dependence on positions, plus that through
  // the pairs unless input.pair_gradients; nullptr if none
  const double *position_gradients = nullptr;

  // warnings torch raised during this call (other than the ones that are
  // turned into errors), for the log
  std::vector<std::string> warnings;

  // with input.uncertainty, in the engine's energy unit: the energy sigma of
  // each owned atom (n_local), and the projection s R (C = R R^T) summed over
  // the owned atoms of every chunk (D numbers): additive over atoms, so the
  // engine sums it over MPI ranks and takes its norm for the total's sigma
  std::vector<double> atom_uncertainty;
  std::vector<double> uncertainty_projection;

  // evaluations (chunks) of this call
  int64_t n_evaluations = 0;

  // wall-clock seconds of this call: inputs to torch, forward, backward
  double time_inputs = 0.0;
  double time_forward = 0.0;
  double time_backward = 0.0;
};

class AlchemicalModel {
 public:
  /// Load the model at `path`. `extensions` is a folder of TorchScript
  /// extensions (empty: none given). Throws on failure.
  AlchemicalModel(const std::string &path, const std::string &extensions);
  ~AlchemicalModel();
  AlchemicalModel(const AlchemicalModel &) = delete;
  AlchemicalModel &operator=(const AlchemicalModel &) = delete;

  /// Set the units of the engine (e.g. "angstrom", "eV"). Throws when the
  /// model's units can not be converted to these.
  void set_engine_units(const std::string &length, const std::string &energy);

  /// Pick the device: "" (the model's preferred device that is available),
  /// "cpu", "cuda" (GPU `local_rank % n_gpus`) or "cuda:N". Throws when not
  /// possible. Must be called after set_engine_units and before compute.
  void set_device(const std::string &requested, int local_rank);

  /// How the pair vectors and the per-atom sums of pair gradients are
  /// computed: "loops" (plain loops, CPU only), "torch" (torch operations,
  /// as on a GPU) or "" (loops on the CPU, torch on a GPU). After set_device.
  void set_pair_ops(const std::string &ops);

  /// Use `n` threads in torch's intra-op pool (n <= 0: leave as is).
  static void set_num_threads(int n);
  static int num_threads();

  std::vector<int64_t> atomic_types() const;
  std::vector<NeighborListRequest> neighbor_lists() const;
  double interaction_range() const;    // engine unit, may be inf
  bool supports_per_atom_energy() const;
  // the model has the outputs energy_uncertainty and
  // alchem::energy_uncertainty_projection (alchem-uncertainty adds them)
  bool has_uncertainty() const;
  // owned atoms per evaluation the model asks for (metadata extra
  // "alchem.chunk"), 0 if it does not say
  int64_t preferred_chunk() const;
  std::string dtype() const;
  std::string device() const;
  std::string energy_unit() const;    // as declared by the model
  std::string length_unit() const;    // as declared by the model
  std::string metadata() const;       // human-readable
  // a value of the metadata's `extra` map, empty if the model has no such key
  std::string metadata_extra(const std::string &key) const;
  // model length unit -> engine length unit (after set_engine_units)
  double length_factor() const;
  std::vector<std::string> references() const;

  void set_check_consistency(bool check);

  /// Run the model. Throws on failure.
  void compute(const EvaluationInput &input, EvaluationOutput &output);

 private:
  std::unique_ptr<ModelData> data_;
};

/// Register C++ autograd kernels for sphericart-torch's operators (whose
/// library registers them from Python only), see sphericart_autograd.cpp.
void register_sphericart_autograd();

/// Wall-clock seconds since `start` (the profile of compute()).
inline double seconds_since(std::chrono::steady_clock::time_point start)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// The metatomic version this plugin was built with.
std::string metatomic_version();
std::string torch_version();

}    // namespace alchem

#endif
