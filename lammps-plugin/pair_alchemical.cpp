/* ----------------------------------------------------------------------
   pair_style alchemical: LAMMPS side. Converts LAMMPS atoms and neighbor
   lists into the arrays alchem::AlchemicalModel feeds to the metatomic model,
   and the model's energy and gradients back into LAMMPS forces, energies and
   virials.

   Ghost atoms are separate atoms of the system given to the model (no cell,
   no periodic boundaries): pairs are taken from LAMMPS' full neighbor list,
   the energy is the sum over owned atoms, and forces on ghosts are sent back
   to their owners by LAMMPS (newton_pair on).
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring their own copy of {fmt}.
#include "pair_alchemical.h"

#include "atom.h"
#include "citeme.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include "alchemical_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>

#ifdef __GLIBC__
#include <malloc.h>
#endif

using namespace LAMMPS_NS;

namespace {

const char *const ELEMENTS[] = {
    "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",
    "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh",
    "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",  "Re",
    "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db",
    "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
const int N_ELEMENTS = sizeof(ELEMENTS) / sizeof(ELEMENTS[0]);

// atomic number of an element symbol (or of a plain atomic number), 0 if unknown
int atomic_number(const std::string &name)
{
  for (int z = 1; z <= N_ELEMENTS; z++) {
    if (name == ELEMENTS[z - 1]) return z;
  }
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos &&
      name.size() < 4) {
    int z = std::stoi(name);
    if (z >= 1 && z <= N_ELEMENTS) return z;
  }
  return 0;
}

std::string element_name(int64_t z)
{
  if (z >= 1 && z <= N_ELEMENTS) return ELEMENTS[z - 1];
  return "Z=" + std::to_string(z);
}

// engine units (length, energy) for a LAMMPS unit style; empty when the style
// has no physical scale (lj) or is unknown
std::pair<std::string, std::string> engine_units(const std::string &style)
{
  if (style == "metal") return {"angstrom", "eV"};
  if (style == "real") return {"angstrom", "kcal/mol"};
  if (style == "electron") return {"Bohr", "Hartree"};
  if (style == "si") return {"m", "J"};
  return {"", ""};
}

const char *const USAGE =
    "pair_style alchemical <model.pt> [device cpu|cuda|cuda:N] [extensions <dir>|none] "
    "[check_consistency on|off] [threads <N>] [chunk <N>|all] [malloc_reuse on|off] "
    "[pair_ops loops|torch] [profile on|off] [swap_cache yes|no] [swap_trace <prefix>|none] "
    "[uncertainty <N>] [uncertainty_file <path>|none] [uncertainty_threshold <sigma>] "
    "[uncertainty_action warn|stop]";

// close contacts: warn below this fraction of the shortest distance of a pair
// of elements in the training data (as alchem.contacts.MARGIN)
const double CLOSE_CONTACT_MARGIN = 0.9;

// glibc's malloc serves blocks of more than 128 KB-32 MB with mmap and gives
// them back to the kernel when freed: the model's large temporaries are then
// page-faulted in, zero-filled, at every step (a third to a half of the time
// of the default models at 16384 atoms). `malloc_reuse on` (the default) makes
// malloc keep freed memory in the process and reuse it: no mmap (blocks come
// from the heap), no trimming of the heap's top, which grows in steps of
// 64 MB: the policy of python/alchem/memory.py (training, ASE), the same three
// values. This applies to the whole process, and is undone by a later
// pair_style alchemical with `malloc_reuse off`. Returns false where malloc is
// not glibc's (nothing done).
bool malloc_reuse(bool on)
{
#ifdef __GLIBC__
  static bool set = false;
  if (on && !set) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);    // -1: never trim
    mallopt(M_TOP_PAD, 64 << 20);
    set = true;
  } else if (!on && set) {
    // glibc's defaults (the dynamic mmap threshold can not be restored)
    mallopt(M_MMAP_MAX, 65536);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    mallopt(M_TOP_PAD, 128 * 1024);
    set = false;
  }
  return true;
#else
  (void)on;
  return false;
#endif
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairAlchemical::PairAlchemical(LAMMPS *lmp) :
    Pair(lmp), input_(new alchem::EvaluationInput()), output_(new alchem::EvaluationOutput()),
    trial_input_(new alchem::EvaluationInput()), trial_output_(new alchem::EvaluationOutput())
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // ghost atoms carry forces: F.r over local atoms is not the virial
  no_virial_fdotr_compute = 1;
  // per-atom virials are split between the two atoms of each pair, a
  // decomposition that also holds for the centroid form (9 components)
  centroidstressflag = CENTROID_AVAIL;
  // compute pair alchemical: the uncertainty's max, total, min and mean sigma
  // (pair_alchemical_uncertainty.cpp)
  nextra = 4;
  memory->create(pvector, nextra, "pair:pvector");
  for (int k = 0; k < nextra; k++) pvector[k] = 0.0;
}

PairAlchemical::~PairAlchemical()
{
  if (swap_trace_ != nullptr) fclose(swap_trace_);
  if (uncertainty_file_ != nullptr) fclose(uncertainty_file_);
  memory->destroy(pvector);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairAlchemical::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  for (int i = 0; i <= n; i++) {
    for (int j = 0; j <= n; j++) {
      setflag[i][j] = 0;
      cutghost[i][j] = 0.0;
    }
  }
  type_to_z_.assign(n + 1, 0);
}

/* ----------------------------------------------------------------------
   pair_style alchemical model.pt [keyword value ...]
------------------------------------------------------------------------- */

void PairAlchemical::settings(int narg, char **arg)
{
  if (narg < 1) error->all(FLERR, "Illegal pair_style alchemical command, expected: {}", USAGE);
  model_path_ = arg[0];
  const Keywords keywords = parse_keywords(narg - 1, arg + 1);
  const auto units = engine_units_or_error();
  const std::string extensions = extensions_folder(keywords);
  const bool glibc = malloc_reuse(keywords.malloc_reuse);
  load_model(keywords, extensions, units);
  energy_unit_ = units.second;
  setup_uncertainty(keywords);
  choose_chunk(keywords);
  profile_ = keywords.profile;
  swap_cache_ = keywords.swap_cache;
  swap_.valid = false;
  if (swap_trace_ != nullptr) fclose(swap_trace_);
  swap_trace_ = nullptr;
  swap_trace_path_ = keywords.swap_trace;

  if (model_->energy_unit().empty() && comm->me == 0) {
    error->warning(FLERR,
                   "pair_style alchemical: the model declares no energy unit, its energies are "
                   "used as they are in LAMMPS' energy unit");
  }
  lists_.clear();
  for (const auto &request : model_->neighbor_lists()) {
    ModelList list;
    list.cutoff = request.cutoff;
    list.cutoff2 = request.cutoff * request.cutoff;
    list.full_list = request.full_list;
    lists_.push_back(std::move(list));
  }
  last_build_ = -1;
  if (comm->me == 0) log_settings(keywords, extensions, glibc, units);
}

/* the keywords after the model file, with LAMMPS' parsers */

PairAlchemical::Keywords PairAlchemical::parse_keywords(int narg, char **arg)
{
  Keywords keywords;
  for (int iarg = 0; iarg < narg; iarg += 2) {
    const std::string keyword = arg[iarg];
    if (keyword != "device" && keyword != "extensions" && keyword != "check_consistency" &&
        keyword != "threads" && keyword != "chunk" && keyword != "malloc_reuse" &&
        keyword != "pair_ops" && keyword != "profile" && keyword != "swap_cache" &&
        keyword != "swap_trace" && keyword != "uncertainty" && keyword != "uncertainty_file" &&
        keyword != "uncertainty_threshold" && keyword != "uncertainty_action") {
      error->all(FLERR,
                 "pair_style alchemical: unknown keyword '{}'; valid keywords are device, "
                 "extensions, check_consistency and threads, for memory and speed chunk, "
                 "malloc_reuse, pair_ops and swap_cache, profile and swap_trace, and "
                 "uncertainty, uncertainty_file, uncertainty_threshold and uncertainty_action "
                 "({})",
                 keyword, USAGE);
    }
    if (iarg + 1 >= narg) {
      error->all(FLERR, "pair_style alchemical: missing value after keyword '{}' ({})", keyword,
                 USAGE);
    }
    const std::string value = arg[iarg + 1];
    if (keyword == "device") {
      if (value != "cpu" && value != "cuda" && value.rfind("cuda:", 0) != 0) {
        error->all(FLERR,
                   "pair_style alchemical: invalid device '{}', expected cpu, cuda or cuda:N",
                   value);
      }
      keywords.device = value;
    } else if (keyword == "extensions") {
      keywords.extensions_given = true;
      keywords.extensions = value == "none" ? "" : value;
    } else if (keyword == "check_consistency") {
      keywords.check_consistency = utils::logical(FLERR, value, false, lmp) == 1;
    } else if (keyword == "threads") {
      keywords.threads = utils::inumeric(FLERR, value, false, lmp);
      if (keywords.threads < 1) {
        error->all(FLERR, "pair_style alchemical: threads must be at least 1");
      }
    } else if (keyword == "chunk") {
      keywords.chunk_given = true;
      keywords.chunk = value == "all" ? 0 : utils::inumeric(FLERR, value, false, lmp);
      if (value != "all" && keywords.chunk < 1) {
        error->all(FLERR,
                   "pair_style alchemical: invalid value '{}' for keyword 'chunk', expected a "
                   "number of atoms N >= 1 (atoms per evaluation of the model) or 'all'",
                   value);
      }
    } else if (keyword == "malloc_reuse") {
      keywords.malloc_reuse = utils::logical(FLERR, value, false, lmp) == 1;
    } else if (keyword == "pair_ops") {
      if (value != "loops" && value != "torch") {
        error->all(FLERR,
                   "pair_style alchemical: invalid value '{}' for keyword 'pair_ops', expected "
                   "loops (CPU only) or torch",
                   value);
      }
      keywords.pair_ops = value;
    } else if (keyword == "profile") {
      keywords.profile = utils::logical(FLERR, value, false, lmp) == 1;
    } else if (keyword == "swap_cache") {
      keywords.swap_cache = utils::logical(FLERR, value, false, lmp) == 1;
    } else if (keyword == "swap_trace") {
      keywords.swap_trace = value == "none" ? "" : value;
    } else {
      parse_uncertainty_keyword(keyword, value, keywords);
    }
  }
  return keywords;
}

/* units of the engine: the model converts its inputs and outputs to these */

std::pair<std::string, std::string> PairAlchemical::engine_units_or_error()
{
  unit_style_ = update->unit_style;
  const auto units = engine_units(unit_style_);
  if (units.first.empty()) {
    error->all(FLERR,
               "pair_style alchemical does not support `units {}`: the model needs physical "
               "units, use `units metal` (eV, Angstrom), `units real` (kcal/mol, Angstrom), "
               "`units electron` or `units si`, set before pair_style",
               unit_style_);
  }
  return units;
}

/* the model file is readable; the folder of TorchScript extensions ("": none) */

std::string PairAlchemical::extensions_folder(const Keywords &keywords)
{
  if (!platform::file_is_readable(model_path_)) {
    error->all(FLERR,
               "pair_style alchemical: cannot read the model file '{}' (missing or not "
               "readable; relative paths are relative to the folder LAMMPS runs in)",
               model_path_);
  }
  if (keywords.extensions_given) {
    if (!keywords.extensions.empty() && !platform::path_is_directory(keywords.extensions)) {
      error->all(FLERR, "pair_style alchemical: extensions folder '{}' does not exist",
                 keywords.extensions);
    }
    return keywords.extensions;
  }
  // default: the `extensions/` folder next to the model, when there is one
  auto folder = platform::path_join(platform::path_dirname(model_path_), "extensions");
  return platform::path_is_directory(folder) ? folder : std::string();
}

void PairAlchemical::load_model(const Keywords &keywords, const std::string &extensions,
                                const std::pair<std::string, std::string> &units)
{
  // node-local rank: spreads the ranks of a node over its GPUs
  MPI_Comm local;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &local);
  int local_rank = 0;
  MPI_Comm_rank(local, &local_rank);
  MPI_Comm_free(&local);

  model_.reset();
  try {
    auto model = std::make_unique<alchem::AlchemicalModel>(model_path_, extensions);
    model->set_engine_units(units.first, units.second);
    model->set_device(keywords.device, local_rank);
    model->set_pair_ops(keywords.pair_ops);
    model->set_check_consistency(keywords.check_consistency);
    // torch has its own OpenMP runtime (alchemicalplugin.cpp): without
    // `threads`, as many as LAMMPS' OpenMP threads per rank (OMP_NUM_THREADS,
    // 1 when unset), not torch's default of every core under each MPI rank
    alchem::AlchemicalModel::set_num_threads(keywords.threads > 0 ? keywords.threads
                                                                  : comm->nthreads);
    model_ = std::move(model);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style alchemical: {}", e.what());
  }
}

void PairAlchemical::choose_chunk(const Keywords &keywords)
{
  chunk_ = keywords.chunk;
  if (keywords.chunk_given) return;
  if (model_->device().rfind("cuda", 0) == 0) {
    // a GPU wants all atoms at once: chunks of 1024 atoms made the default
    // models 1.7-6.5x slower per step on an H100 (docs/benchmarks-md.md)
    chunk_ = 0;
  } else if (model_->preferred_chunk() > 0) {
    // this project's models on the CPU kernel need little memory per atom
    // (alchem.export): fewer, larger chunks
    chunk_ = static_cast<int>(model_->preferred_chunk());
  }
}

/* the model and the settings in the log (rank 0), its references in citeme */

void PairAlchemical::log_settings(const Keywords &keywords, const std::string &extensions,
                                  bool glibc, const std::pair<std::string, std::string> &units)
{
  std::string message =
      fmt::format("pair_style alchemical: model {} (metatomic {}, torch {})\n", model_path_,
                  alchem::metatomic_version(), alchem::torch_version());
  message += model_->metadata() + "\n";
  message += fmt::format("  device {}, dtype {}, {} torch thread(s) per rank", model_->device(),
                         model_->dtype(), alchem::AlchemicalModel::num_threads());
  if (!extensions.empty()) message += fmt::format(", extensions from {}", extensions);
  message += chunk_ > 0 ? fmt::format("\n  chunk {}: at most {} owned atoms per evaluation of "
                                      "the model",
                                      chunk_, chunk_)
                        : std::string("\n  chunk all: all owned atoms in one evaluation");
  if (!glibc) {
    message += "; malloc_reuse: not glibc's malloc, nothing done";
  } else {
    message += keywords.malloc_reuse ? "; malloc_reuse on: freed memory is kept for reuse "
                                       "(glibc malloc: no mmap, no trim)"
                                     : "; malloc_reuse off";
  }
  if (!keywords.pair_ops.empty()) message += fmt::format("; pair_ops {}", keywords.pair_ops);
  message +=
      keywords.swap_cache
          ? "\n  swap_cache yes: fix atom/swap trials evaluate the energy only, and only around "
            "the atoms whose element changed"
          : "\n  swap_cache no: fix atom/swap trials evaluate everything";
  if (uncertainty_every_ > 0) {
    message += fmt::format("\n  uncertainty every {} steps", uncertainty_every_);
    if (!uncertainty_path_.empty()) message += fmt::format(", written to {}", uncertainty_path_);
    if (uncertainty_threshold_ > 0.0) {
      message += fmt::format(", per-atom sigma above {} {}: {}", uncertainty_threshold_,
                             units.second, uncertainty_stop_ ? "stop" : "warn");
    }
  } else if (model_->has_uncertainty()) {
    message += "\n  uncertainty: the model has it; not evaluated (keyword uncertainty N, or fix "
               "pair ... uncertainty 1)";
  }
  message += fmt::format("\n  model units: length {}, energy {}; LAMMPS units {} ({}, {})\n",
                         model_->length_unit(), model_->energy_unit(), unit_style_, units.first,
                         units.second);
  for (const auto &request : model_->neighbor_lists()) {
    message += fmt::format("  neighbor list: {} (cutoff {} {})\n", request.description,
                           request.cutoff, units.first);
  }
  message += fmt::format("  interaction range {} {}\n", model_->interaction_range(), units.first);
  utils::logmesg(lmp, message);
  if (lmp->citeme) {
    for (const auto &reference : model_->references()) lmp->citeme->add(reference + "\n");
  }
}

/* ----------------------------------------------------------------------
   pair_coeff * * <element of type 1> ... <element of type N>
------------------------------------------------------------------------- */

void PairAlchemical::coeff(int narg, char **arg)
{
  if (!model_) error->all(FLERR, "pair_coeff before pair_style alchemical");
  if (!allocated) allocate();

  const int ntypes = atom->ntypes;
  if (narg < 2 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0) {
    error->all(FLERR,
               "Incorrect args for pair_coeff with pair_style alchemical: expected `pair_coeff "
               "* * <element of type 1> ... <element of type {}>`",
               ntypes);
  }
  if (narg - 2 != ntypes) {
    error->all(FLERR,
               "pair_coeff * * for pair_style alchemical needs one element per atom type: the "
               "box has {} atom type(s) but {} element(s) were given",
               ntypes, narg - 2);
  }

  const auto supported = model_->atomic_types();
  std::string supported_names;
  for (auto z : supported) {
    if (!supported_names.empty()) supported_names += ' ';
    supported_names += element_name(z);
  }

  for (int type = 1; type <= ntypes; type++) {
    const std::string name = arg[type + 1];
    const int z = atomic_number(name);
    if (z == 0) {
      error->all(FLERR,
                 "pair_coeff for pair_style alchemical: '{}' (atom type {}) is not an element "
                 "symbol (expected e.g. Cu, Ni, Pt; symbols are case-sensitive)",
                 name, type);
    }
    if (std::find(supported.begin(), supported.end(), z) == supported.end()) {
      error->all(FLERR,
                 "pair_coeff for pair_style alchemical: element {} (atom type {}) is not "
                 "supported by the model {}, which knows: {}",
                 name, type, model_path_, supported_names);
    }
    type_to_z_[type] = z;
  }

  for (int i = 1; i <= ntypes; i++) {
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
  }
  setup_close_contacts();
  swap_.valid = false;
}

/* ----------------------------------------------------------------------
   close contacts: the model records the shortest distance of each pair of
   elements in its training data (metadata extra "alchem.shortest_distances",
   JSON {"Cu-Ni": 2.291, ...} in the model's length unit). Below
   CLOSE_CONTACT_MARGIN x that distance the model extrapolates; the first step
   with such pairs gets one warning with their count (docs/lammps.md).
------------------------------------------------------------------------- */

void PairAlchemical::setup_close_contacts()
{
  const int ntypes = atom->ntypes;
  close2_.assign((ntypes + 1) * (ntypes + 1), 0.0);
  check_close_ = false;
  const std::string table = model_->metadata_extra("alchem.shortest_distances");
  if (table.empty()) return;    // a model from elsewhere: nothing to compare with
  json distances;
  try {
    distances = json::parse(table);
  } catch (const std::exception &e) {
    error->all(FLERR,
               "pair_style alchemical: the model's alchem.shortest_distances is not JSON: {}",
               e.what());
  }
  const double factor = model_->length_factor();
  for (const auto &item : distances.items()) {
    const std::string pair = item.key();
    const auto dash = pair.find('-');
    const int za = dash == std::string::npos ? 0 : atomic_number(pair.substr(0, dash));
    const int zb = dash == std::string::npos ? 0 : atomic_number(pair.substr(dash + 1));
    if (za == 0 || zb == 0 || !item.value().is_number() || !(item.value().get<double>() > 0.0) ||
        !std::isfinite(item.value().get<double>())) {
      error->all(FLERR,
                 "pair_style alchemical: the model's alchem.shortest_distances has an entry "
                 "'{}' that is not 'A-B': distance (a positive number of the model's length "
                 "unit)",
                 pair);
    }
    const double limit = CLOSE_CONTACT_MARGIN * item.value().get<double>() * factor;
    for (int a = 1; a <= ntypes; a++) {
      for (int b = 1; b <= ntypes; b++) {
        const int z1 = type_to_z_[a], z2 = type_to_z_[b];
        if ((z1 == za && z2 == zb) || (z1 == zb && z2 == za)) {
          close2_[a * (ntypes + 1) + b] = limit * limit;
          check_close_ = true;
        }
      }
    }
  }
}

/* each pair once over all ranks: from its owned atom with the smaller tag */

void PairAlchemical::check_close_contacts()
{
  double **x = atom->x;
  const int *type = atom->type;
  const tagint *tag = atom->tag_enable ? atom->tag : nullptr;
  const int nlocal = atom->nlocal;
  const int stride = atom->ntypes + 1;
  bigint count = 0;
  double worst = HUGE_VAL;                     // smallest (r / limit)^2
  double closest[4] = {0.0, 0.0, 0.0, 0.0};    // Z_i, Z_j, r, limit
  for (size_t c = 0; c < candidate_first_.size(); c++) {
    const int i = candidate_first_[c];
    const int j = candidate_second_[c];
    if (i >= nlocal) continue;
    if (tag ? tag[i] >= tag[j] : (j < nlocal && i > j)) continue;
    const double limit2 = close2_[type[i] * stride + type[j]];
    if (limit2 <= 0.0) continue;
    const double dx = x[j][0] - x[i][0];
    const double dy = x[j][1] - x[i][1];
    const double dz = x[j][2] - x[i][2];
    const double rsq = dx * dx + dy * dy + dz * dz;
    if (rsq >= limit2) continue;
    count++;
    if (rsq / limit2 < worst) {
      worst = rsq / limit2;
      closest[0] = type_to_z_[type[i]];
      closest[1] = type_to_z_[type[j]];
      closest[2] = std::sqrt(rsq);
      closest[3] = std::sqrt(limit2);
    }
  }
  bigint total = 0;
  MPI_Allreduce(&count, &total, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  if (total == 0) return;
  struct {
    double value;
    int rank;
  } mine{worst, comm->me}, lowest{};
  MPI_Allreduce(&mine, &lowest, 1, MPI_DOUBLE_INT, MPI_MINLOC, world);
  MPI_Bcast(closest, 4, MPI_DOUBLE, lowest.rank, world);
  check_close_ = false;
  if (comm->me == 0) {
    error->warning(FLERR,
                   "pair_style alchemical: {} atom pair(s) closer than {} x the shortest distance "
                   "of their elements in the training data at step {} (closest: {}-{} at {:.3f}, "
                   "trained down to {:.3f}; units {}): the model extrapolates there and its "
                   "forces can not be trusted. For short distances see the ZBL pair_style "
                   "hybrid/overlay in docs/lammps.md. Warned once",
                   total, CLOSE_CONTACT_MARGIN, update->ntimestep,
                   element_name(static_cast<int64_t>(closest[0])),
                   element_name(static_cast<int64_t>(closest[1])), closest[2],
                   closest[3] / CLOSE_CONTACT_MARGIN, unit_style_);
  }
}

/* ---------------------------------------------------------------------- */

void PairAlchemical::init_style()
{
  if (force->newton_pair == 0) {
    error->all(FLERR,
               "pair_style alchemical requires newton_pair on: forces on ghost atoms are sent "
               "back to their owners. Remove `newton off` (or use `newton on`)");
  }
  if (unit_style_ != update->unit_style) {
    error->all(FLERR,
               "pair_style alchemical was set up for `units {}` but LAMMPS now uses `units {}`: "
               "put the units command before pair_style",
               unit_style_, update->unit_style);
  }

  double max_list_cutoff = 0.0;
  for (const auto &list : lists_) max_list_cutoff = std::max(max_list_cutoff, list.cutoff);
  const double range = model_->interaction_range();
  if (!std::isfinite(range)) {
    error->all(FLERR,
               "pair_style alchemical: the model has an infinite interaction range (long-range "
               "model), which a LAMMPS neighbor list and ghost atoms can not provide");
  }
  if (max_list_cutoff <= 0.0) {
    error->all(FLERR, "pair_style alchemical: the model requests no neighbor list, LAMMPS can not "
                      "give it its neighbors");
  }
  // pairs are needed up to the largest cutoff of the model's lists
  cutoff_ = max_list_cutoff;
  // a model that looks further than its neighbor lists (message passing)
  // needs the pairs between ghost atoms too, and ghosts up to its range
  ghost_centers_ = range > max_list_cutoff * (1.0 + 1e-10);
  ghostneigh = ghost_centers_ ? 1 : 0;
  if (ghost_centers_) {
    const double ghost_cutoff = range + neighbor->skin;
    if (comm->cutghostuser < ghost_cutoff) {
      comm->cutghostuser = ghost_cutoff;
      if (comm->me == 0) {
        utils::logmesg(lmp,
                       "pair_style alchemical: interaction range {} is larger than the "
                       "neighbor list cutoff {}: ghost atoms up to {} (comm_modify cutoff)\n",
                       range, max_list_cutoff, ghost_cutoff);
      }
    }
  }

  int flags = NeighConst::REQ_FULL;
  if (ghost_centers_) flags |= NeighConst::REQ_GHOST;
  neighbor->add_request(this, flags);

  last_build_ = -1;
  swap_.valid = false;
}

double PairAlchemical::init_one(int i, int j)
{
  if (ghost_centers_) {
    cutghost[i][j] = cutoff_;
    cutghost[j][i] = cutoff_;
  }
  return cutoff_;
}

/* ----------------------------------------------------------------------
   candidate pairs, from LAMMPS' full list (within cutoff + skin): every
   (owned, any) pair, centre by centre, then the reverse (ghost, owned) of each
   pair with a ghost, grouped by ghost, so that the model sees all pairs
   touching an owned atom from both ends. LAMMPS lists owned atoms in order and
   ghosts keep their order in the model, so the pairs come sorted by first atom:
   the model then finds a chunk's pairs as one slice (python/alchem/export.py)
   instead of masking all of them for every chunk.
   With ghost centers (message passing), all pairs of the list, as listed.
------------------------------------------------------------------------- */

void PairAlchemical::build_candidates()
{
  candidate_first_.clear();
  candidate_second_.clear();
  const int nlocal = atom->nlocal;
  const int nghost = atom->nghost;
  const int ncenters = list->inum + (ghost_centers_ ? list->gnum : 0);
  // pairs per ghost, shifted by one: after the prefix sum, where each ghost's
  // reverse pairs start
  ghost_offsets_.assign(ghost_centers_ ? 0 : nghost + 1, 0);
  for (int ii = 0; ii < ncenters; ii++) {
    const int i = list->ilist[ii];
    const int *neighbors = list->firstneigh[i];
    const int n = list->numneigh[i];
    for (int jj = 0; jj < n; jj++) {
      const int j = neighbors[jj] & NEIGHMASK;
      candidate_first_.push_back(i);
      candidate_second_.push_back(j);
      if (!ghost_centers_ && j >= nlocal) ghost_offsets_[j - nlocal + 1]++;
    }
  }
  if (ghost_centers_) return;

  // counting sort of the reverse pairs by ghost
  const size_t n_forward = candidate_first_.size();
  for (int g = 0; g < nghost; g++) ghost_offsets_[g + 1] += ghost_offsets_[g];
  const size_t n_reverse = ghost_offsets_[nghost];
  candidate_first_.resize(n_forward + n_reverse);
  candidate_second_.resize(n_forward + n_reverse);
  for (size_t c = 0; c < n_forward; c++) {
    const int32_t j = candidate_second_[c];
    if (j < nlocal) continue;
    const size_t r = n_forward + ghost_offsets_[j - nlocal]++;
    candidate_first_[r] = j;
    candidate_second_[r] = candidate_first_[c];
  }
}

void PairAlchemical::select_pairs(ModelList &model_list)
{
  double **x = atom->x;
  const auto n_candidates = candidate_first_.size();
  const double cutoff2 = model_list.cutoff2;
  const bool half = !model_list.full_list;

  std::swap(model_list.selected, model_list.previous_selected);
  std::swap(model_list.n_selected, model_list.n_previous);
  // the buffers keep the largest size they ever had (no zero-filling of a
  // resize at every step); the first n_selected entries are this step's
  if (model_list.selected.size() < n_candidates) model_list.selected.resize(n_candidates);
  if (model_list.model_samples.size() < 5 * n_candidates) {
    model_list.model_samples.resize(5 * n_candidates);
  }
  int32_t *selected = model_list.selected.data();
  int32_t *samples = model_list.model_samples.data();
  size_t n = 0;
  for (size_t c = 0; c < n_candidates; c++) {
    const int32_t i = candidate_first_[c];
    const int32_t j = candidate_second_[c];
    // half list: each pair once. Ghost atoms come after owned atoms, so this
    // keeps (owned, owned) pairs once and (owned, ghost) pairs from the owner
    if (half && i > j) continue;
    const double dx = x[j][0] - x[i][0];
    const double dy = x[j][1] - x[i][1];
    const double dz = x[j][2] - x[i][2];
    if (dx * dx + dy * dy + dz * dz >= cutoff2) continue;
    selected[n] = static_cast<int32_t>(c);
    int32_t *row = samples + 5 * n;
    row[0] = model_index_[i];
    row[1] = model_index_[j];
    row[2] = 0;
    row[3] = 0;
    row[4] = 0;
    n++;
  }
  model_list.n_selected = n;
}

bool PairAlchemical::ModelList::selection_changed() const
{
  return n_selected != n_previous ||
         !std::equal(selected.begin(), selected.begin() + n_selected, previous_selected.begin());
}

/* ----------------------------------------------------------------------
   number the atoms given to the model, when LAMMPS rebuilds its list: owned
   atoms keep their index, the ghosts in a candidate pair follow in LAMMPS
   order. Between rebuilds the model gets the same atoms (a ghost whose pairs
   are all beyond the cutoff at some step is an atom without pairs there: it
   changes no energy), so the numbering is not redone at every step.
------------------------------------------------------------------------- */

void PairAlchemical::number_atoms()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int32_t needed = -2;
  model_index_.assign(nall, -1);
  for (const int32_t i : candidate_first_) model_index_[i] = needed;
  for (const int32_t j : candidate_second_) model_index_[j] = needed;
  model_atoms_.resize(nlocal);
  for (int i = 0; i < nlocal; i++) {
    model_index_[i] = i;
    model_atoms_[i] = i;
  }
  for (int i = nlocal; i < nall; i++) {
    if (model_index_[i] == needed) {
      model_index_[i] = static_cast<int32_t>(model_atoms_.size());
      model_atoms_.push_back(i);
    }
  }
}

/* positions and elements of the model's atoms, at every step */

void PairAlchemical::gather_atoms()
{
  double **x = atom->x;
  const int *type = atom->type;
  const auto n_atoms = model_atoms_.size();
  positions_.resize(3 * n_atoms);
  types_.resize(n_atoms);
  for (size_t a = 0; a < n_atoms; a++) {
    const int i = model_atoms_[a];
    positions_[3 * a] = x[i][0];
    positions_[3 * a + 1] = x[i][1];
    positions_[3 * a + 2] = x[i][2];
    types_[a] = type_to_z_[type[i]];
  }
}

/* ---------------------------------------------------------------------- */

void PairAlchemical::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  if (eflag_atom && !model_->supports_per_atom_energy()) {
    error->all(FLERR,
               "pair_style alchemical: per-atom energies were requested (e.g. by compute "
               "pe/atom) but the model {} only computes the total energy",
               model_path_);
  }

  const int nall = atom->nlocal + atom->nghost;
  auto start = std::chrono::steady_clock::now();
  // a Monte Carlo trial of fix atom/swap asks for the energy only: LAMMPS clears
  // the forces and computes them again after the trials (pair_alchemical_swap.cpp)
  const bool monte_carlo = eflag_global && !vflag_either && monte_carlo_trial();
  const bool energy_only = monte_carlo && swap_cache_;
  // the same on every rank (step, flags): the reductions of the uncertainty
  // are collective
  const bool uncertainty = !monte_carlo && uncertainty_step();
  if (energy_only && only_types_changed()) {
    local_trial_energy();
    swap_local_time_ += alchem::seconds_since(start);    // all of the pair style's work
    return;
  }
  bool rebuilt = false;
  if (neighbor->ncalls != last_build_ || nall != last_nall_) {
    build_candidates();
    number_atoms();
    index_candidates();
    last_build_ = neighbor->ncalls;
    last_nall_ = nall;
    rebuilt = true;
  }

  // collective: every rank, with or without atoms. Trials move no atom (and are
  // the same on every rank): the evaluation after them checks
  if (check_close_ && !energy_only) check_close_contacts();

  // a domain without owned atoms has no energy and puts no force anywhere
  if (atom->nlocal == 0) {
    if (uncertainty) uncertainty_results(alchem::EvaluationOutput());    // collective
    if (energy_only) fill_swap_cache(*output_);
    if (monte_carlo) trace_trial_energy(0.0);
    return;
  }

  prepare_input(rebuilt, energy_only);
  input_->uncertainty = uncertainty;
  const double time_pairs = alchem::seconds_since(start);
  try {
    model_->compute(*input_, *output_);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style alchemical: the model failed: {}", e.what());
  }
  log_torch_warnings(*output_);

  start = std::chrono::steady_clock::now();
  check_finite(*output_);
  accumulate(*output_);    // without gradients (a trial): the energies only
  if (uncertainty) uncertainty_results(*output_);
  if (energy_only) {
    fill_swap_cache(*output_);
  } else {
    swap_.valid = false;
  }
  if (monte_carlo) trace_trial_energy(output_->energy);
  if (profile_) {
    profile_calls_++;
    profile_evaluations_ += output_->n_evaluations;
    profile_times_[0] += time_pairs;
    profile_times_[1] += output_->time_inputs;
    profile_times_[2] += output_->time_forward;
    profile_times_[3] += output_->time_backward;
    profile_times_[4] += alchem::seconds_since(start);
  }
}

/* this step's pairs of every list and the atoms' positions, for the model */

void PairAlchemical::prepare_input(bool rebuilt, bool energy_only)
{
  auto &input = *input_;
  input.pairs.resize(lists_.size());
  // the model's atom numbering depends on the pairs of all lists: when one
  // list changes, the metadata of every list is rebuilt (also after a local
  // trial, which sent the model other pairs)
  bool changed = rebuilt || model_pairs_stale_;
  model_pairs_stale_ = false;
  for (auto &model_list : lists_) {
    select_pairs(model_list);
    changed = changed || model_list.selection_changed();
  }
  for (auto &pairs : input.pairs) pairs.samples_changed = changed;
  gather_atoms();

  input.n_local = atom->nlocal;
  input.n_total = static_cast<int64_t>(model_atoms_.size());
  input.positions = positions_.data();
  input.types = types_.data();
  // a trial keeps the per-atom energies, for the next trials to update
  input.per_atom_energy = eflag_atom != 0 || (energy_only && model_->supports_per_atom_energy());
  input.need_gradients = !energy_only;
  // per-atom virials need each pair's dE/dr; the global virial comes from
  // sum_i x_i (x) F_i over owned and ghost atoms, which equals the sum over
  // pairs since the ghosts are images: r_ij = x_j - x_i
  input.pair_gradients = vflag_atom || cvflag_atom;
  input.chunk = chunk_;
  for (size_t k = 0; k < lists_.size(); k++) {
    auto &pairs = input.pairs[k];
    pairs.n_pairs = static_cast<int64_t>(lists_[k].n_selected);
    pairs.samples = lists_[k].model_samples.data();
  }
}

/* torch's warnings in the log, each once */

void PairAlchemical::log_torch_warnings(const alchem::EvaluationOutput &output)
{
  if (comm->me != 0) return;
  for (const auto &warning : output.warnings) {
    if (warned_.insert(warning).second) {
      error->warning(FLERR, "pair_style alchemical: torch: {}", warning);
    }
  }
}

void PairAlchemical::finish()
{
  finish_swap_summary();
  if (!profile_ || profile_calls_ == 0) return;
  double total = 0.0;
  for (int k = 0; k < 5; k++) total += profile_times_[k];
  const double n = static_cast<double>(profile_calls_);
  utils::logmesg(lmp,
                 "pair_style alchemical on rank {}: {} evaluations, ms per evaluation: "
                 "pairs {:.3f}, inputs {:.3f}, forward {:.3f}, backward {:.3f}, "
                 "forces/virial {:.3f}, total {:.3f}; {:.1f} model evaluation(s) (chunks) per "
                 "step\n",
                 comm->me, profile_calls_, 1e3 * profile_times_[0] / n, 1e3 * profile_times_[1] / n,
                 1e3 * profile_times_[2] / n, 1e3 * profile_times_[3] / n,
                 1e3 * profile_times_[4] / n, 1e3 * total / n,
                 static_cast<double>(profile_evaluations_) / n);
  profile_calls_ = 0;
  profile_evaluations_ = 0;
  for (double &t : profile_times_) t = 0.0;
}

/* ----------------------------------------------------------------------
   a model that gives NaN or inf stops the run here, before anything reaches
   the forces, naming the step and an atom (MD would otherwise go on with NaN
   positions). One pass over the gradients: negligible next to the model.
------------------------------------------------------------------------- */

void PairAlchemical::check_finite(const alchem::EvaluationOutput &output)
{
  int atom_index = -1;    // LAMMPS index of an atom with a non-finite value
  std::string what;
  auto finite3 = [](const double *g) {
    return std::isfinite(g[0]) && std::isfinite(g[1]) && std::isfinite(g[2]);
  };
  for (size_t k = 0; k < lists_.size() && atom_index < 0; k++) {
    const double *gradient = output.pair_gradients[k];
    if (gradient == nullptr) continue;
    const auto &model_list = lists_[k];
    for (size_t p = 0; p < model_list.n_selected; p++) {
      if (!finite3(gradient + 3 * p)) {
        atom_index = candidate_first_[model_list.selected[p]];
        what = "force";
        break;
      }
    }
  }
  if (atom_index < 0 && output.position_gradients != nullptr) {
    for (size_t a = 0; a < model_atoms_.size(); a++) {
      if (!finite3(output.position_gradients + 3 * a)) {
        atom_index = model_atoms_[a];
        what = "force";
        break;
      }
    }
  }
  if (atom_index < 0 && eflag_atom) {
    for (int i = 0; i < atom->nlocal; i++) {
      if (!std::isfinite(output.atom_energies[i])) {
        atom_index = i;
        what = "energy";
        break;
      }
    }
  }
  if (atom_index < 0 && std::isfinite(output.energy)) return;
  if (atom_index < 0) {
    atom_index = 0;    // only the total is known: name the first owned atom
    what = "energy";
  }
  const int type = atom->type[atom_index];
  const double *x = atom->x[atom_index];
  error->one(FLERR,
             "pair_style alchemical: the model {} gave a non-finite {} (NaN or inf) at step {} "
             "for atom {} (type {}, {}, at {:.6g} {:.6g} {:.6g}) on rank {}: the run stops "
             "here. Look for atoms too close together or far outside the training data",
             model_path_, what, update->ntimestep, atom->tag[atom_index], type,
             element_name(type_to_z_[type]), x[0], x[1], x[2], comm->me);
}

/* ----------------------------------------------------------------------
   forces, energies and virials from dE/dr_ij (r_ij = x_j - x_i): the pair
   puts +dE/dr_ij on i and -dE/dr_ij on j, and -r_ij (x) dE/dr_ij into the
   virial, split evenly between i and j for per-atom virials.
------------------------------------------------------------------------- */

void PairAlchemical::accumulate(const alchem::EvaluationOutput &output)
{
  if (eflag_global) eng_vdwl += output.energy;
  if (eflag_atom) {
    for (int i = 0; i < atom->nlocal; i++) eatom[i] += output.atom_energies[i];
  }

  double w[9] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};    // row-major r (x) F
  for (size_t k = 0; k < lists_.size(); k++) {
    if (output.pair_gradients[k] != nullptr)
      add_pair_forces(lists_[k], output.pair_gradients[k], w);
  }
  // direct dependence of the energy on positions (not through pairs)
  if (output.position_gradients != nullptr) add_position_forces(output.position_gradients, w);

  if (vflag_global) {
    virial[0] += w[0];
    virial[1] += w[4];
    virial[2] += w[8];
    virial[3] += 0.5 * (w[1] + w[3]);
    virial[4] += 0.5 * (w[2] + w[6]);
    virial[5] += 0.5 * (w[5] + w[7]);
  }
}

/* forces and virials of dE/dr of each pair of one list */

void PairAlchemical::add_pair_forces(const ModelList &model_list, const double *gradient, double *w)
{
  double **f = atom->f;
  double **x = atom->x;
  const bool per_atom_virial = vflag_atom || cvflag_atom;
  for (size_t p = 0; p < model_list.n_selected; p++) {
    const int32_t c = model_list.selected[p];
    const int i = candidate_first_[c];
    const int j = candidate_second_[c];
    const double *g = gradient + 3 * p;
    f[i][0] += g[0];
    f[i][1] += g[1];
    f[i][2] += g[2];
    f[j][0] -= g[0];
    f[j][1] -= g[1];
    f[j][2] -= g[2];
    if (vflag_either) {
      const double r[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      const double wp[9] = {-r[0] * g[0], -r[0] * g[1], -r[0] * g[2], -r[1] * g[0], -r[1] * g[1],
                            -r[1] * g[2], -r[2] * g[0], -r[2] * g[1], -r[2] * g[2]};
      if (vflag_global) {
        for (int c = 0; c < 9; c++) w[c] += wp[c];
      }
      if (per_atom_virial) {
        tally_atom_virial(i, wp, 0.5);
        tally_atom_virial(j, wp, 0.5);
      }
    }
  }
}

/* forces and virials of dE/dx of the model's atoms */

void PairAlchemical::add_position_forces(const double *g, double *w)
{
  double **f = atom->f;
  double **x = atom->x;
  const bool per_atom_virial = vflag_atom || cvflag_atom;
  const auto n_atoms = model_atoms_.size();
  for (size_t a = 0; a < n_atoms; a++) {
    const int i = model_atoms_[a];
    const double fx = -g[3 * a];
    const double fy = -g[3 * a + 1];
    const double fz = -g[3 * a + 2];
    f[i][0] += fx;
    f[i][1] += fy;
    f[i][2] += fz;
    if (vflag_either) {
      const double wp[9] = {x[i][0] * fx, x[i][0] * fy, x[i][0] * fz, x[i][1] * fx, x[i][1] * fy,
                            x[i][1] * fz, x[i][2] * fx, x[i][2] * fy, x[i][2] * fz};
      if (vflag_global) {
        for (int c = 0; c < 9; c++) w[c] += wp[c];
      }
      if (per_atom_virial) tally_atom_virial(i, wp, 1.0);
    }
  }
}

/* scale x the row-major 3x3 r (x) F `wp` into atom i's virial */

void PairAlchemical::tally_atom_virial(int i, const double *wp, double scale)
{
  if (vflag_atom) {
    vatom[i][0] += scale * wp[0];
    vatom[i][1] += scale * wp[4];
    vatom[i][2] += scale * wp[8];
    vatom[i][3] += scale * 0.5 * (wp[1] + wp[3]);
    vatom[i][4] += scale * 0.5 * (wp[2] + wp[6]);
    vatom[i][5] += scale * 0.5 * (wp[5] + wp[7]);
  }
  if (cvflag_atom) {
    // xx yy zz xy xz yz yx zx zy
    cvatom[i][0] += scale * wp[0];
    cvatom[i][1] += scale * wp[4];
    cvatom[i][2] += scale * wp[8];
    cvatom[i][3] += scale * wp[1];
    cvatom[i][4] += scale * wp[2];
    cvatom[i][5] += scale * wp[5];
    cvatom[i][6] += scale * wp[3];
    cvatom[i][7] += scale * wp[6];
    cvatom[i][8] += scale * wp[7];
  }
}

double PairAlchemical::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += static_cast<double>(candidate_first_.capacity() + candidate_second_.capacity()) *
           sizeof(int32_t);
  for (const auto &list : lists_) {
    bytes += static_cast<double>(list.selected.capacity() + list.previous_selected.capacity() +
                                 list.model_samples.capacity()) *
             sizeof(int32_t);
  }
  bytes += static_cast<double>(ghost_offsets_.capacity()) * sizeof(size_t);
  bytes +=
      static_cast<double>(model_index_.capacity() + model_atoms_.capacity() + types_.capacity()) *
      sizeof(int32_t);
  bytes += static_cast<double>(positions_.capacity()) * sizeof(double);
  return bytes;
}
