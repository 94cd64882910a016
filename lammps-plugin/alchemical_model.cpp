// Torch-side half of `pair_style alchemical` (see alchemical_model.h).
#include "alchemical_model.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#include <metatensor/torch.hpp>
#include <metatomic/torch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace alchem {

namespace {

// the outputs of a model with uncertainty (alchem.export) this plugin reads
const char *const SIGMA_OUTPUT = "energy_uncertainty";
const char *const PROJECTION_OUTPUT = "alchem::energy_uncertainty_projection";

std::string join(const std::vector<std::string> &values, const std::string &separator)
{
  std::string result;
  for (size_t i = 0; i < values.size(); i++) {
    if (i != 0) result += separator;
    result += values[i];
  }
  return result;
}

// Collects the warnings torch raises while the model runs, instead of printing
// them to stderr where nobody looks during an MD run.
class CollectWarnings : public c10::WarningHandler {
 public:
  void process(const c10::Warning &warning) override { messages.push_back(warning.msg()); }
  std::vector<std::string> messages;
};

// A custom operator without an autograd kernel in C++ (e.g. sphericart-torch
// 2.0, which registers its gradients from Python only) is treated by torch as
// constant in the backward pass: the forces miss its contribution.
void check_autograd_warnings(const std::vector<std::string> &messages)
{
  for (const auto &message : messages) {
    if (message.find("autograd kernel was not registered") != std::string::npos) {
      auto op = message.substr(0, message.find(':', message.find("::") + 2));
      throw std::runtime_error(
          "the model's forces would be wrong: its custom operator " + op +
          " has no autograd kernel registered in C++, so torch treats it as constant when "
          "computing forces (its library registers gradients from Python only, as "
          "sphericart-torch 2.0 does). Use a model without this operator, or a version of "
          "the library that registers its autograd in C++. Torch said: " +
          message);
    }
  }
}

// On the CPU the pair vectors and the sums of pair gradients per atom are
// plain loops over the engine's pair list: torch's index_select and index_add_
// cost several times more for rows of 3 numbers (at 16384 atoms, 900k pairs:
// 40-50 ms per step for index_add_ against 2-3 ms for the loop). `samples`
// holds rows of (first, second, 0, 0, 0).
template <typename T>
void pair_differences(const double *positions, const int32_t *samples, int64_t n_pairs, T *out)
{
  for (int64_t p = 0; p < n_pairs; p++) {
    const double *first = positions + 3 * samples[5 * p];
    const double *second = positions + 3 * samples[5 * p + 1];
    for (int c = 0; c < 3; c++) out[3 * p + c] = static_cast<T>(second[c] - first[c]);
  }
}

template <typename T>
void sum_pair_gradients(const T *gradient, const int32_t *samples, int64_t n_pairs, double *out)
{
  for (int64_t p = 0; p < n_pairs; p++) {
    double *first = out + 3 * samples[5 * p];
    double *second = out + 3 * samples[5 * p + 1];
    for (int c = 0; c < 3; c++) {
      const double g = static_cast<double>(gradient[3 * p + c]);
      second[c] += g;
      first[c] -= g;
    }
  }
}

}    // namespace

struct NeighborListCache {
  metatomic_torch::NeighborListOptions options;
  NeighborListRequest request;
  metatensor_torch::Labels samples;    // on the model device, reused while unchanged
  torch::Tensor first;                 // first_atom and second_atom columns of
  torch::Tensor second;                // the samples (int64, model device)
  torch::Tensor vectors;               // leaf of the current evaluation
  torch::Tensor gradient;              // dE/dr on CPU, float64
  // with chunk_pairs: each chunk's pairs [lo, hi) and their samples
  std::vector<std::pair<int64_t, int64_t>> chunk_ranges;
  bool sorted_by_first = true;    // the pairs' first atoms never decrease
  std::vector<metatensor_torch::Labels> chunk_samples;
};

// One call of AlchemicalModel::compute: its inputs on the model device, and
// the gradients summed over its chunks.
struct Evaluation {
  torch::Tensor positions64;    // float64 copy on the model device
  torch::Tensor positions;      // in the model dtype: the leaf of dE/dx
  torch::Tensor types;
  int64_t chunk = 1;    // owned atoms per evaluation
  int64_t n_chunks = 1;
  bool chunk_pairs = false;    // each chunk takes only its own pairs (a slice)
  torch::Tensor position_gradient;
  std::vector<torch::Tensor> pair_gradients;    // one per neighbor list
};

struct ModelData {
  metatensor_torch::Module model;
  metatomic_torch::ModelCapabilities capabilities;
  metatomic_torch::ModelEvaluationOptions options;
  metatomic_torch::ModelOutput energy_output;
  // the uncertainty outputs, requested only when EvaluationInput::uncertainty
  // (in the model's own unit, converted by uncertainty_factor)
  bool has_uncertainty = false;
  metatomic_torch::ModelOutput sigma_output;
  metatomic_torch::ModelOutput projection_output;
  double uncertainty_factor = 1.0;
  std::vector<NeighborListCache> neighbors;
  std::string length_unit;
  bool check_consistency = false;
  // pair vectors and per-atom gradient sums as plain loops (the CPU's default),
  // or as the torch operations a GPU needs (set_pair_ops)
  bool pair_loops = true;
  // the model declares (metadata extra "alchem.pairs_of_selected_atoms" =
  // "first_atom") that the energies of the selected atoms need only the pairs
  // whose first atom is selected: each chunk then gets its own pairs, instead of
  // all pairs and a gradient of all of them per chunk (which made the cost per
  // atom grow with the system: 16 chunks of 1024 at 16384 atoms)
  bool chunk_pairs = false;
  int64_t preferred_chunk = 0;
  double length_factor = 1.0;    // model length unit -> engine length unit

  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat64;
  bool device_set = false;

  // constant inputs, on the model device
  torch::Tensor cell;
  torch::Tensor pbc;
  metatensor_torch::Labels xyz;
  metatensor_torch::Labels distance;
  // the owned atoms, one Labels per chunk
  std::vector<metatensor_torch::Labels> selected_atoms;
  int64_t selected_atoms_count = -1;
  int64_t selected_atoms_chunk = -1;

  // outputs kept alive between calls
  torch::Tensor position_gradient;

  explicit ModelData(torch::jit::Module module) : model(std::move(module)) {}

  // the steps of AlchemicalModel::compute, in order
  Evaluation start_evaluation(const EvaluationInput &input) const;
  bool chunks_take_own_pairs(const EvaluationInput &input, const Evaluation &ev,
                             std::vector<std::string> &warnings);
  void update_pairs(size_t k, const EvaluationInput &input, const Evaluation &ev);
  void update_chunk_ranges(NeighborListCache &cache, const PairsInput &pairs, int64_t n_local,
                           const Evaluation &ev);
  void update_selected_atoms(int64_t n_local, int64_t chunk);
  metatomic_torch::System chunk_system(size_t c, const EvaluationInput &input, const Evaluation &ev,
                                       std::vector<torch::Tensor> &vectors) const;
  torch::Tensor forward_chunk(size_t c, const EvaluationInput &input, const Evaluation &ev,
                              std::vector<torch::Tensor> &vectors, EvaluationOutput &output);
  void backward_chunk(size_t c, const torch::Tensor &total,
                      const std::vector<torch::Tensor> &vectors, Evaluation &ev);
  void finish_gradients(const EvaluationInput &input, Evaluation &ev, EvaluationOutput &output);
};

// Exported models that call alchem::power_spectrum record its signature and the
// alchem version that exported them (metadata extra "alchem.ops_schema",
// "alchem.version"). A model of another alchem version would otherwise fail
// inside TorchScript with a long message, or load against a changed operator.
static void check_operator_schema(const std::string &path)
{
  std::string wanted, exported_by = "unknown";
  try {
    auto metadata = metatomic_torch::read_model_metadata(path);
    auto found = metadata->extra.find("alchem.ops_schema");
    if (found == metadata->extra.end()) return;
    wanted = found->value();
    auto version = metadata->extra.find("alchem.version");
    if (version != metadata->extra.end()) exported_by = version->value();
  } catch (const std::exception &) {
    return;    // an unreadable file: loading it below says so
  }
  std::string have = "no such operator";
  auto handle = c10::Dispatcher::singleton().findSchema({"alchem::power_spectrum", ""});
  if (handle.has_value()) {
    std::ostringstream schema;
    schema << handle->schema();
    have = schema.str();
  }
  if (have != wanted) {
    throw std::runtime_error(
        "the model '" + path + "' calls alchem::power_spectrum as exported by alchem " +
        exported_by + " (" + wanted + "), but this plugin (alchem " + ALCHEM_VERSION +
        ") provides (" + have +
        "): re-export the checkpoint with this alchem (`alchem-export model.ckpt`), "
        "or export it with `alchem-export --torch-only`");
  }
}

// The metadata keys alchem.export writes for this plugin (table in
// docs/lammps.md): a value outside the allowed ones is an error, never a silent
// default.
static void read_plugin_metadata(ModelData &d, const std::string &path)
{
  auto metadata =
      d.model.run_method("metadata").toCustomClass<metatomic_torch::ModelMetadataHolder>();
  auto declared = metadata->extra.find("alchem.pairs_of_selected_atoms");
  if (declared != metadata->extra.end()) {
    if (declared->value() != "first_atom" && declared->value() != "all") {
      throw std::runtime_error("the model '" + path +
                               "' has metadata alchem.pairs_of_selected_atoms = '" +
                               declared->value() + "', expected 'first_atom' or 'all'");
    }
    d.chunk_pairs = declared->value() == "first_atom";
  }
  auto chunk = metadata->extra.find("alchem.chunk");
  if (chunk != metadata->extra.end()) {
    const std::string &value = chunk->value();
    size_t end = 0;
    long long n = -1;
    try {
      n = std::stoll(value, &end);
    } catch (const std::exception &) {
      end = 0;
    }
    if (value.empty() || end != value.size() || n < 1 || n > INT32_MAX) {
      throw std::runtime_error("the model '" + path + "' has metadata alchem.chunk = '" + value +
                               "', expected a number of atoms N >= 1");
    }
    d.preferred_chunk = n;
  }
}

AlchemicalModel::AlchemicalModel(const std::string &path, const std::string &extensions)
{
  check_operator_schema(path);
  torch::optional<std::string> extensions_directory = torch::nullopt;
  if (!extensions.empty()) extensions_directory = extensions;
  if (std::getenv("ALCHEM_NO_SPHERICART_AUTOGRAD") == nullptr) register_sphericart_autograd();
  // TorchScript's profiling executor specialises the graph (and on GPU compiles
  // fused kernels) for the tensor shapes it has seen; in MD the number of pairs
  // changes at every step, so it kept re-optimising (H100, 2048 atoms: steps
  // 3.3x slower than with the plain executor).
  torch::jit::setGraphExecutorOptimize(false);

  try {
    data_ = std::make_unique<ModelData>(
        metatomic_torch::load_atomistic_model(path, extensions_directory));
  } catch (const std::exception &e) {
    std::string hint;
    if (extensions.empty()) {
      hint = " (if the model uses TorchScript extensions such as sphericart-torch, put them in "
             "an `extensions/` folder next to the model or give `extensions <folder>`)";
    }
    throw std::runtime_error("could not load the metatomic model '" + path + "'" + hint + ": " +
                             e.what());
  }

  auto &d = *data_;
  d.capabilities =
      d.model.run_method("capabilities").toCustomClass<metatomic_torch::ModelCapabilitiesHolder>();
  if (!d.capabilities->outputs().contains("energy")) {
    std::vector<std::string> names;
    for (const auto &item : d.capabilities->outputs()) names.push_back(item.key());
    throw std::runtime_error("the model '" + path + "' has no \"energy\" output (it has: " +
                             join(names, ", ") + "), it can not be used as a pair style");
  }

  const auto &dtype = d.capabilities->dtype();
  if (dtype == "float64") {
    d.dtype = torch::kFloat64;
  } else if (dtype == "float32") {
    d.dtype = torch::kFloat32;
  } else {
    throw std::runtime_error("the model uses dtype '" + dtype +
                             "', only float32 and float64 are supported");
  }

  auto requested = d.model.run_method("requested_neighbor_lists").toList();
  for (const auto &ivalue : requested) {
    NeighborListCache cache;
    cache.options = ivalue.get().toCustomClass<metatomic_torch::NeighborListOptionsHolder>();
    d.neighbors.push_back(std::move(cache));
  }

  read_plugin_metadata(d, path);

  d.options = torch::make_intrusive<metatomic_torch::ModelEvaluationOptionsHolder>();
  d.energy_output = torch::make_intrusive<metatomic_torch::ModelOutputHolder>();
  d.energy_output->explicit_gradients = {};
  d.energy_output->set_sample_kind("system");
  d.options->outputs.insert("energy", d.energy_output);

  const auto &outputs = d.capabilities->outputs();
  d.has_uncertainty = outputs.contains(SIGMA_OUTPUT) && outputs.contains(PROJECTION_OUTPUT);
  if (d.has_uncertainty) {
    d.sigma_output = torch::make_intrusive<metatomic_torch::ModelOutputHolder>();
    d.sigma_output->set_sample_kind("atom");
    d.sigma_output->set_unit(outputs.at(SIGMA_OUTPUT)->unit());
    d.projection_output = torch::make_intrusive<metatomic_torch::ModelOutputHolder>();
    d.projection_output->set_sample_kind("system");
    d.projection_output->set_unit(outputs.at(PROJECTION_OUTPUT)->unit());
  }
}

AlchemicalModel::~AlchemicalModel() = default;

void AlchemicalModel::set_engine_units(const std::string &length, const std::string &energy)
{
  auto &d = *data_;
  const auto &model_length = d.capabilities->length_unit();
  const auto model_energy = this->energy_unit();

  try {
    d.length_factor = metatomic_torch::unit_conversion_factor(model_length, length);
  } catch (const std::exception &e) {
    throw std::runtime_error("can not convert the model's length unit '" + model_length +
                             "' to the LAMMPS length unit '" + length + "': " + e.what());
  }
  if (!model_energy.empty()) {
    try {
      metatomic_torch::unit_conversion_factor(model_energy, energy);
    } catch (const std::exception &e) {
      throw std::runtime_error("can not convert the model's energy unit '" + model_energy +
                               "' to the LAMMPS energy unit '" + energy + "': " + e.what());
    }
  }

  if (d.has_uncertainty && !d.sigma_output->unit().empty()) {
    try {
      d.uncertainty_factor =
          metatomic_torch::unit_conversion_factor(d.sigma_output->unit(), energy);
    } catch (const std::exception &e) {
      throw std::runtime_error("can not convert the unit '" + d.sigma_output->unit() +
                               "' of the model's energy_uncertainty to the LAMMPS energy unit '" +
                               energy + "': " + e.what());
    }
  }

  d.length_unit = length;
  d.options->set_length_unit(length);
  d.energy_output->set_unit(energy);

  for (auto &cache : d.neighbors) {
    cache.request.cutoff = cache.options->engine_cutoff(length);
    cache.request.full_list = cache.options->full_list();
    cache.request.description = cache.options->str();
    if (!(cache.request.cutoff > 0.0) || !std::isfinite(cache.request.cutoff)) {
      throw std::runtime_error("the model requested a neighbor list with an invalid cutoff (" +
                               cache.options->str() + ")");
    }
  }
}

void AlchemicalModel::set_device(const std::string &requested, int local_rank)
{
  auto &d = *data_;
  const auto &supported = d.capabilities->supported_devices;
  auto model_supports = [&](const std::string &type) {
    for (const auto &s : supported) {
      if (s == type) return true;
    }
    return false;
  };
  const bool cuda = torch::cuda::is_available();

  std::string type;
  int index = -1;
  if (requested.empty()) {
    for (const auto &s : supported) {
      if (s == "cpu" || (s == "cuda" && cuda)) {
        type = s;
        break;
      }
    }
    if (type.empty()) {
      throw std::runtime_error("none of the devices this model supports (" + join(supported, ", ") +
                               ") is available here");
    }
  } else if (requested == "cpu") {
    type = "cpu";
  } else if (requested == "cuda" || requested.rfind("cuda:", 0) == 0) {
    type = "cuda";
    if (requested.size() > 5) {
      try {
        size_t end = 0;
        index = std::stoi(requested.substr(5), &end);
        if (end != requested.size() - 5 || index < 0) throw std::invalid_argument("");
      } catch (const std::exception &) {
        throw std::runtime_error("invalid device '" + requested +
                                 "', expected cpu, cuda or cuda:N");
      }
    }
  } else {
    throw std::runtime_error("unknown device '" + requested + "', expected cpu, cuda or cuda:N");
  }

  if (type == "cuda") {
    if (!cuda) {
      throw std::runtime_error(
          "device cuda requested, but the torch this plugin runs with (" TORCH_VERSION
          ") has no CUDA support or sees no GPU: use `device cpu`, or install a CUDA build of "
          "torch and rebuild the plugin against it");
    }
    const int count = static_cast<int>(torch::cuda::device_count());
    if (index < 0) {
      index = local_rank % count;
    } else if (index >= count) {
      throw std::runtime_error("device " + requested + " requested, but only " +
                               std::to_string(count) + " GPU(s) are visible");
    }
  }
  if (!model_supports(type)) {
    throw std::runtime_error("device " + type + " requested, but the model only supports " +
                             join(supported, ", "));
  }

  d.device = type == "cuda" ? torch::Device(torch::kCUDA, static_cast<int8_t>(index))
                            : torch::Device(torch::kCPU);
  d.model.to(d.device);

  auto float_options = torch::TensorOptions().dtype(d.dtype).device(d.device);
  d.cell = torch::zeros({3, 3}, float_options);
  d.pbc = torch::zeros({3}, torch::TensorOptions().dtype(torch::kBool).device(d.device));
  d.xyz = metatensor_torch::LabelsHolder::create({"xyz"}, {{0}, {1}, {2}})->to(d.device);
  d.distance = metatensor_torch::LabelsHolder::create({"distance"}, {{0}})->to(d.device);
  d.selected_atoms.clear();
  d.selected_atoms_count = -1;
  for (auto &cache : d.neighbors) cache.samples = {};
  d.pair_loops = d.device.is_cpu();
  d.device_set = true;
}

void AlchemicalModel::set_pair_ops(const std::string &ops)
{
  auto &d = *data_;
  if (!d.device_set) throw std::runtime_error("internal error: set_pair_ops before set_device");
  if (ops == "loops") {
    if (!d.device.is_cpu()) {
      throw std::runtime_error("pair_ops loops runs on the CPU only, the model runs on " +
                               d.device.str() + ": use pair_ops torch (the default there)");
    }
    d.pair_loops = true;
  } else if (ops == "torch") {
    d.pair_loops = false;
  } else if (!ops.empty()) {
    throw std::runtime_error("invalid pair_ops '" + ops + "', expected loops or torch");
  }
  for (auto &cache : d.neighbors) cache.samples = {};
}

void AlchemicalModel::set_num_threads(int n)
{
  if (n > 0) at::set_num_threads(n);
}

int AlchemicalModel::num_threads()
{
  return at::get_num_threads();
}

std::vector<int64_t> AlchemicalModel::atomic_types() const
{
  return data_->capabilities->atomic_types;
}

std::vector<NeighborListRequest> AlchemicalModel::neighbor_lists() const
{
  std::vector<NeighborListRequest> result;
  for (const auto &cache : data_->neighbors) result.push_back(cache.request);
  return result;
}

double AlchemicalModel::interaction_range() const
{
  return data_->capabilities->engine_interaction_range(data_->length_unit);
}

bool AlchemicalModel::has_uncertainty() const
{
  return data_->has_uncertainty;
}

bool AlchemicalModel::supports_per_atom_energy() const
{
  return data_->capabilities->outputs().at("energy")->sample_kind() == "atom";
}

std::string AlchemicalModel::dtype() const
{
  return data_->capabilities->dtype();
}

std::string AlchemicalModel::device() const
{
  return data_->device.str();
}

std::string AlchemicalModel::energy_unit() const
{
  return data_->capabilities->outputs().at("energy")->unit();
}

std::string AlchemicalModel::length_unit() const
{
  return data_->capabilities->length_unit();
}

std::string AlchemicalModel::metadata_extra(const std::string &key) const
{
  auto metadata =
      data_->model.run_method("metadata").toCustomClass<metatomic_torch::ModelMetadataHolder>();
  auto found = metadata->extra.find(key);
  return found == metadata->extra.end() ? std::string() : found->value();
}

double AlchemicalModel::length_factor() const
{
  return data_->length_factor;
}

std::string AlchemicalModel::metadata() const
{
  auto metadata =
      data_->model.run_method("metadata").toCustomClass<metatomic_torch::ModelMetadataHolder>();
  return metadata->print();
}

std::vector<std::string> AlchemicalModel::references() const
{
  auto metadata =
      data_->model.run_method("metadata").toCustomClass<metatomic_torch::ModelMetadataHolder>();
  std::vector<std::string> result;
  for (const auto &item : metadata->references) {
    for (const auto &reference : item.value()) result.push_back(reference);
  }
  return result;
}

void AlchemicalModel::set_check_consistency(bool check)
{
  data_->check_consistency = check;
}

// The pairs [first_pair_of(a), first_pair_of(b)) are those whose first atom is in
// [a, b), in pairs sorted by first atom (rows of 5 numbers, first atom in column
// 0; std::lower_bound would need an iterator over these rows).
static int64_t first_pair_of(const int32_t *samples, int64_t n_pairs, int64_t atom)
{
  int64_t low = 0, high = n_pairs;
  while (low < high) {
    const int64_t middle = (low + high) / 2;
    if (samples[5 * middle] < atom) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

// positions and types: copies on the model device; the pair vectors are
// differences of the float64 positions, rounded to the model dtype after (the
// same numbers as differences taken in the engine, but only n_total x 3 values
// to copy to a GPU instead of n_pairs x 3). The owned atoms go in chunks of at
// most input.chunk atoms (one chunk: all).
Evaluation ModelData::start_evaluation(const EvaluationInput &input) const
{
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i32 = torch::TensorOptions().dtype(torch::kInt32);
  Evaluation ev;
  ev.positions64 = torch::from_blob(const_cast<double *>(input.positions), {input.n_total, 3}, f64)
                       .to(device, torch::kFloat64, /*non_blocking=*/false, /*copy=*/true);
  ev.positions = ev.positions64.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  if (input.need_gradients) ev.positions.requires_grad_(true);
  ev.types = torch::from_blob(const_cast<int32_t *>(input.types), {input.n_total}, i32)
                 .to(device, torch::kInt32, /*non_blocking=*/false, /*copy=*/true);
  const int64_t n_local = std::max<int64_t>(input.n_local, 1);
  ev.chunk = input.chunk > 0 && input.chunk < input.n_local ? input.chunk : n_local;
  ev.n_chunks = (n_local + ev.chunk - 1) / ev.chunk;
  ev.pair_gradients.resize(neighbors.size());
  return ev;
}

// Whether each chunk can take only its own pairs: the model says so, and every
// list is sorted by first atom (which the slices of update_chunk_ranges rely on;
// the pair style's lists are). Checked once per change of the pairs, one pass
// over them; an unsorted list takes the general path, every chunk seeing all
// pairs, with one warning.
bool ModelData::chunks_take_own_pairs(const EvaluationInput &input, const Evaluation &ev,
                                      std::vector<std::string> &warnings)
{
  bool own_pairs = chunk_pairs && ev.n_chunks > 1;
  for (size_t k = 0; own_pairs && k < neighbors.size(); k++) {
    auto &cache = neighbors[k];
    const auto &pairs = input.pairs[k];
    if (pairs.samples_changed || !cache.samples || cache.samples->count() != pairs.n_pairs) {
      cache.sorted_by_first = true;
      for (int64_t p = 1; p < pairs.n_pairs; p++) {
        if (pairs.samples[5 * p] < pairs.samples[5 * (p - 1)]) {
          cache.sorted_by_first = false;
          break;
        }
      }
      if (!cache.sorted_by_first) {
        warnings.push_back(
            "the pairs of a neighbor list are not sorted by first atom: each chunk takes all "
            "pairs (slower, same forces)");
      }
    }
    own_pairs = cache.sorted_by_first;
  }
  return own_pairs;
}

// The samples (metadata) of list k when its pairs changed, and this step's pair
// vectors: plain loops on the CPU, torch operations on a GPU (pair_ops).
void ModelData::update_pairs(size_t k, const EvaluationInput &input, const Evaluation &ev)
{
  auto &cache = neighbors[k];
  const auto &pairs = input.pairs[k];
  const int64_t n_pairs = pairs.n_pairs;
  const bool samples_changed =
      pairs.samples_changed || !cache.samples || cache.samples->count() != n_pairs;

  if (samples_changed) {
    const auto i32 = torch::TensorOptions().dtype(torch::kInt32);
    torch::Tensor values;
    if (n_pairs == 0) {
      values = torch::zeros({0, 5}, i32);
    } else {
      values = torch::from_blob(const_cast<int32_t *>(pairs.samples), {n_pairs, 5}, i32).clone();
    }
    // the pairs come from LAMMPS' neighbor list: each (first, second) once
    cache.samples = torch::make_intrusive<metatensor_torch::LabelsHolder>(
                        std::vector<std::string>{"first_atom", "second_atom", "cell_shift_a",
                                                 "cell_shift_b", "cell_shift_c"},
                        values, metatensor::assume_unique{})
                        ->to(device);
    if (!pair_loops) {
      const auto atoms = cache.samples->values();
      cache.first = atoms.select(1, 0).to(torch::kInt64).contiguous();
      cache.second = atoms.select(1, 1).to(torch::kInt64).contiguous();
    }
  }

  if (pair_loops) {
    cache.vectors = torch::empty({n_pairs, 3, 1}, torch::TensorOptions().dtype(dtype));
    if (dtype == torch::kFloat32) {
      pair_differences(input.positions, pairs.samples, n_pairs, cache.vectors.data_ptr<float>());
    } else {
      pair_differences(input.positions, pairs.samples, n_pairs, cache.vectors.data_ptr<double>());
    }
  } else {
    cache.vectors =
        (ev.positions64.index_select(0, cache.second) - ev.positions64.index_select(0, cache.first))
            .to(dtype)
            .reshape({n_pairs, 3, 1});
  }
  if (input.need_gradients && !ev.chunk_pairs) cache.vectors.requires_grad_(true);

  if (ev.chunk_pairs &&
      (samples_changed || static_cast<int64_t>(cache.chunk_ranges.size()) != ev.n_chunks ||
       selected_atoms_chunk != ev.chunk || selected_atoms_count != input.n_local)) {
    update_chunk_ranges(cache, pairs, input.n_local, ev);
  }
}

// each chunk's pairs: one slice [lo, hi) of the pairs sorted by first atom
void ModelData::update_chunk_ranges(NeighborListCache &cache, const PairsInput &pairs,
                                    int64_t n_local, const Evaluation &ev)
{
  cache.chunk_ranges.clear();
  cache.chunk_samples.clear();
  const auto values = cache.samples->values();
  for (int64_t c = 0; c < ev.n_chunks; c++) {
    const int64_t lo = first_pair_of(pairs.samples, pairs.n_pairs, c * ev.chunk);
    const int64_t hi =
        first_pair_of(pairs.samples, pairs.n_pairs, std::min((c + 1) * ev.chunk, n_local));
    cache.chunk_ranges.emplace_back(lo, hi);
    cache.chunk_samples.push_back(torch::make_intrusive<metatensor_torch::LabelsHolder>(
        cache.samples->names(), values.narrow(0, lo, hi - lo).contiguous(),
        metatensor::assume_unique{}));
  }
}

// the owned atoms, one Labels per chunk, rebuilt when their number or the chunk
// size changes
void ModelData::update_selected_atoms(int64_t n_local, int64_t chunk)
{
  if (selected_atoms_count == n_local && selected_atoms_chunk == chunk) return;
  const auto i32 = torch::TensorOptions().dtype(torch::kInt32);
  selected_atoms.clear();
  int64_t first = 0;
  do {
    const int64_t n = std::min(chunk, n_local - first);
    auto values = torch::zeros({n, 2}, i32);
    values.index_put_({torch::indexing::Slice(), 1}, torch::arange(first, first + n, i32));
    selected_atoms.push_back(
        torch::make_intrusive<metatensor_torch::LabelsHolder>(
            std::vector<std::string>{"system", "atom"}, values, metatensor::assume_unique{})
            ->to(device));
    first += n;
  } while (first < n_local);
  selected_atoms_count = n_local;
  selected_atoms_chunk = chunk;
}

// The system of chunk c: a new one for every evaluation (a model may attach
// data to it), with the same leaf tensors, whose gradients of each chunk are
// summed, or with chunk_pairs leaves of this chunk's pairs (returned in
// `vectors`, one per list).
metatomic_torch::System ModelData::chunk_system(size_t c, const EvaluationInput &input,
                                                const Evaluation &ev,
                                                std::vector<torch::Tensor> &vectors) const
{
  auto system =
      torch::make_intrusive<metatomic_torch::SystemHolder>(ev.types, ev.positions, cell, pbc);
  vectors.clear();
  for (const auto &cache : neighbors) {
    auto samples = cache.samples;
    auto values = cache.vectors;
    if (ev.chunk_pairs) {
      const auto range = cache.chunk_ranges[c];
      samples = cache.chunk_samples[c];
      values = cache.vectors.narrow(0, range.first, range.second - range.first).detach();
      if (input.need_gradients) values.requires_grad_(true);
    }
    vectors.push_back(values);
    auto block = torch::make_intrusive<metatensor_torch::TensorBlockHolder>(
        values, samples, std::vector<metatensor_torch::Labels>{xyz}, distance);
    system->add_neighbor_list(cache.options, block);
  }
  return system;
}

// the model's energy block of one evaluation
static metatensor_torch::TensorBlock energy_block(const c10::Dict<c10::IValue, c10::IValue> &result)
{
  auto energy_map = result.at("energy").toCustomClass<metatensor_torch::TensorMapHolder>();
  if (energy_map->keys()->count() != 1) {
    throw std::runtime_error("the model returned an energy TensorMap with " +
                             std::to_string(energy_map->keys()->count()) +
                             " blocks, expected exactly one");
  }
  return metatensor_torch::TensorMapHolder::block_by_id(energy_map, 0);
}

// per-atom energies of one chunk into output.atom_energies
static void add_atom_energies(const metatensor_torch::TensorBlock &block, int64_t n_local,
                              EvaluationOutput &output)
{
  auto samples = block->samples();
  auto names = samples->names();
  if (names.size() != 2 || names[1] != "atom") {
    throw std::runtime_error("the model did not return per-atom energies (samples are " +
                             join(names, ", ") + ")");
  }
  auto sample_values = samples->values().to(torch::kCPU, torch::kInt32).contiguous();
  auto energies =
      block->values().detach().reshape({-1}).to(torch::kCPU, torch::kFloat64).contiguous();
  if (energies.size(0) != sample_values.size(0)) {
    throw std::runtime_error("the model returned more than one energy per atom");
  }
  const auto *atoms = sample_values.data_ptr<int32_t>();
  const auto *energy = energies.data_ptr<double>();
  for (int64_t i = 0; i < energies.size(0); i++) {
    const int32_t atom = atoms[2 * i + 1];
    if (atom < 0 || atom >= n_local) {
      throw std::runtime_error("the model returned a per-atom energy for atom " +
                               std::to_string(atom) + ", which was not selected");
    }
    output.atom_energies[static_cast<size_t>(atom)] += energy[i];
  }
}

// the uncertainty outputs of one chunk: each selected atom's sigma into
// output.atom_uncertainty, the chunk's projection added to
// output.uncertainty_projection (both times `factor`, to the engine's unit)
static void add_uncertainty(const c10::Dict<c10::IValue, c10::IValue> &result, int64_t n_local,
                            double factor, EvaluationOutput &output)
{
  auto single_block = [&](const char *name) {
    if (!result.contains(name)) {
      throw std::runtime_error(std::string("the model did not return the requested output ") +
                               name);
    }
    auto map = result.at(name).toCustomClass<metatensor_torch::TensorMapHolder>();
    if (map->keys()->count() != 1) {
      throw std::runtime_error(std::string("the model returned ") + name + " with " +
                               std::to_string(map->keys()->count()) +
                               " blocks, expected exactly one");
    }
    return metatensor_torch::TensorMapHolder::block_by_id(map, 0);
  };

  auto sigma = single_block(SIGMA_OUTPUT);
  auto samples = sigma->samples()->values().to(torch::kCPU, torch::kInt32).contiguous();
  auto values =
      sigma->values().detach().reshape({-1}).to(torch::kCPU, torch::kFloat64).contiguous();
  if (samples.dim() != 2 || samples.size(1) != 2 || values.size(0) != samples.size(0)) {
    throw std::runtime_error("the model's energy_uncertainty is not one value per selected atom");
  }
  const auto *atoms = samples.data_ptr<int32_t>();
  const auto *sigmas = values.data_ptr<double>();
  for (int64_t i = 0; i < values.size(0); i++) {
    const int32_t atom = atoms[2 * i + 1];
    if (atom < 0 || atom >= n_local) {
      throw std::runtime_error("the model returned an energy_uncertainty for atom " +
                               std::to_string(atom) + ", which was not selected");
    }
    output.atom_uncertainty[static_cast<size_t>(atom)] = factor * sigmas[i];
  }

  auto projection = single_block(PROJECTION_OUTPUT)
                        ->values()
                        .detach()
                        .reshape({-1})
                        .to(torch::kCPU, torch::kFloat64)
                        .contiguous();
  const auto n = static_cast<size_t>(projection.size(0));
  if (output.uncertainty_projection.empty()) output.uncertainty_projection.assign(n, 0.0);
  if (output.uncertainty_projection.size() != n) {
    throw std::runtime_error("the model's alchem::energy_uncertainty_projection changed size");
  }
  const auto *p = projection.data_ptr<double>();
  for (size_t k = 0; k < n; k++) output.uncertainty_projection[k] += factor * p[k];
}

// Forward pass of chunk c: adds its energy (and per-atom energies) to
// `output`; returns the chunk's total energy, a graph for the backward pass.
torch::Tensor ModelData::forward_chunk(size_t c, const EvaluationInput &input, const Evaluation &ev,
                                       std::vector<torch::Tensor> &vectors,
                                       EvaluationOutput &output)
{
  auto start = std::chrono::steady_clock::now();
  auto system = chunk_system(c, input, ev, vectors);
  options->set_selected_atoms(selected_atoms[c]);
  output.time_inputs += seconds_since(start);
  start = std::chrono::steady_clock::now();

  auto result =
      model.forward({std::vector<metatomic_torch::System>{system}, options, check_consistency})
          .toGenericDict();
  auto block = energy_block(result);
  auto total = block->values().sum();
  output.energy += total.detach().to(torch::kCPU, torch::kFloat64).item<double>();
  output.n_evaluations++;
  if (input.per_atom_energy) add_atom_energies(block, input.n_local, output);
  if (input.uncertainty) add_uncertainty(result, input.n_local, uncertainty_factor, output);
  output.time_forward += seconds_since(start);
  return total;
}

// Backward pass of chunk c: its gradients summed into ev, in the model's dtype
// on its device (with a full list, each pair gets its gradient from the one
// chunk holding its first atom).
void ModelData::backward_chunk(size_t c, const torch::Tensor &total,
                               const std::vector<torch::Tensor> &vectors, Evaluation &ev)
{
  std::vector<torch::Tensor> inputs = {ev.positions};
  for (const auto &values : vectors) inputs.push_back(values);
  auto gradients = torch::autograd::grad({total}, inputs, /*grad_outputs=*/{},
                                         /*retain_graph=*/false, /*create_graph=*/false,
                                         /*allow_unused=*/true);
  auto add = [](torch::Tensor &sum, const torch::Tensor &gradient) {
    if (!gradient.defined() || gradient.numel() == 0) return;
    if (sum.defined()) {
      sum.add_(gradient.detach());
    } else {
      sum = gradient.detach();
    }
  };
  add(ev.position_gradient, gradients[0]);
  for (size_t k = 0; k < neighbors.size(); k++) {
    if (!ev.chunk_pairs) {
      add(ev.pair_gradients[k], gradients[k + 1]);
      continue;
    }
    const auto &gradient = gradients[k + 1];
    if (!gradient.defined() || gradient.numel() == 0) continue;
    if (!ev.pair_gradients[k].defined()) {
      ev.pair_gradients[k] = torch::zeros_like(neighbors[k].vectors);
    }
    const auto range = neighbors[k].chunk_ranges[c];
    ev.pair_gradients[k].narrow(0, range.first, range.second - range.first).add_(gradient.detach());
  }
}

// The gradients summed over the chunks, to the CPU in float64. Without
// input.pair_gradients, dE/dx_second += dE/dr and dE/dx_first -= dE/dr are
// summed on the model device: n_total x 3 numbers come back instead of
// n_pairs x 3.
void ModelData::finish_gradients(const EvaluationInput &input, Evaluation &ev,
                                 EvaluationOutput &output)
{
  auto &summed = ev.position_gradient;
  for (size_t k = 0; !input.pair_gradients && k < neighbors.size(); k++) {
    auto &pair_gradient = ev.pair_gradients[k];
    if (!pair_gradient.defined()) continue;
    const auto &cache = neighbors[k];
    if (!summed.defined()) {
      summed = torch::zeros({input.n_total, 3}, ev.positions64.options());
    } else {
      summed = summed.to(torch::kFloat64).contiguous();
    }
    if (pair_loops) {
      const auto gradient = pair_gradient.contiguous();
      const auto &pairs = input.pairs[k];
      auto *sums = summed.data_ptr<double>();
      if (gradient.scalar_type() == torch::kFloat32) {
        sum_pair_gradients(gradient.data_ptr<float>(), pairs.samples, pairs.n_pairs, sums);
      } else {
        sum_pair_gradients(gradient.data_ptr<double>(), pairs.samples, pairs.n_pairs, sums);
      }
    } else {
      const auto gradient = pair_gradient.reshape({-1, 3}).to(torch::kFloat64);
      summed.index_add_(0, cache.second, gradient);
      summed.index_add_(0, cache.first, gradient, /*alpha=*/-1);
    }
    pair_gradient = torch::Tensor();
  }
  if (summed.defined()) {
    position_gradient = summed.to(torch::kCPU, torch::kFloat64).contiguous();
    output.position_gradients = position_gradient.data_ptr<double>();
  }
  for (size_t k = 0; k < neighbors.size(); k++) {
    if (!ev.pair_gradients[k].defined()) continue;
    neighbors[k].gradient = ev.pair_gradients[k].to(torch::kCPU, torch::kFloat64).contiguous();
    output.pair_gradients[k] = neighbors[k].gradient.data_ptr<double>();
  }
}

// the uncertainty outputs join the energy in the evaluation options only when
// asked: other evaluations request exactly the energy (no features computed)
static void request_uncertainty(ModelData &d, bool uncertainty)
{
  if (uncertainty && !d.has_uncertainty) {
    throw std::runtime_error("internal error: uncertainty requested from a model without it");
  }
  auto &outputs = d.options->outputs;
  if (uncertainty) {
    outputs.insert_or_assign(SIGMA_OUTPUT, d.sigma_output);
    outputs.insert_or_assign(PROJECTION_OUTPUT, d.projection_output);
  } else {
    outputs.erase(SIGMA_OUTPUT);
    outputs.erase(PROJECTION_OUTPUT);
  }
}

void AlchemicalModel::compute(const EvaluationInput &input, EvaluationOutput &output)
{
  auto &d = *data_;
  if (!d.device_set) throw std::runtime_error("internal error: device not set before compute");
  if (input.pairs.size() != d.neighbors.size()) {
    throw std::runtime_error("internal error: wrong number of neighbor lists");
  }
  // without gradients (the energies of Monte Carlo trials) no autograd graph
  // is recorded through the model's parameters
  torch::AutoGradMode enable_grad(input.need_gradients);
  CollectWarnings warnings;
  c10::WarningUtils::WarningHandlerGuard warnings_guard(&warnings);
  output.warnings.clear();
  auto start = std::chrono::steady_clock::now();

  auto ev = d.start_evaluation(input);
  ev.chunk_pairs = d.chunks_take_own_pairs(input, ev, warnings.messages);
  for (size_t k = 0; k < d.neighbors.size(); k++) d.update_pairs(k, input, ev);
  d.update_selected_atoms(input.n_local, ev.chunk);
  d.energy_output->set_sample_kind(input.per_atom_energy ? "atom" : "system");
  request_uncertainty(d, input.uncertainty);

  output.energy = 0.0;
  output.n_evaluations = 0;
  output.time_inputs = seconds_since(start);
  output.time_forward = 0.0;
  output.time_backward = 0.0;
  output.pair_gradients.assign(d.neighbors.size(), nullptr);
  output.position_gradients = nullptr;
  if (input.per_atom_energy) output.atom_energies.assign(static_cast<size_t>(input.n_local), 0.0);
  output.uncertainty_projection.clear();
  if (input.uncertainty) output.atom_uncertainty.assign(static_cast<size_t>(input.n_local), 0.0);
  d.position_gradient = torch::Tensor();
  for (auto &cache : d.neighbors) cache.gradient = torch::Tensor();

  std::vector<torch::Tensor> vectors;
  for (size_t c = 0; c < d.selected_atoms.size(); c++) {
    auto total = d.forward_chunk(c, input, ev, vectors, output);
    if (!input.need_gradients || !total.requires_grad()) continue;
    start = std::chrono::steady_clock::now();
    d.backward_chunk(c, total, vectors, ev);
    output.time_backward += seconds_since(start);
  }

  start = std::chrono::steady_clock::now();
  d.finish_gradients(input, ev, output);
  output.time_backward += seconds_since(start);

  check_autograd_warnings(warnings.messages);
  output.warnings = std::move(warnings.messages);
}

int64_t AlchemicalModel::preferred_chunk() const
{
  return data_->preferred_chunk;
}

std::string metatomic_version()
{
  return metatomic_torch::version();
}

std::string torch_version()
{
  return TORCH_VERSION;
}

}    // namespace alchem
