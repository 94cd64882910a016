/* -*- c++ -*- ----------------------------------------------------------
   pair_style alchemical: metatomic machine-learned potentials (the alchem
   project's SOAP-BPNN and Alchemical Model, or any metatomic energy model)
   in LAMMPS, loaded as a plugin.

     pair_style alchemical model.pt [device cpu|cuda|cuda:N]
                [extensions DIR|none] [check_consistency on|off] [threads N]
                [chunk N|all] [malloc_reuse on|off] [pair_ops loops|torch]
                [profile on|off] [swap_cache yes|no] [swap_trace PREFIX|none]
                [uncertainty N] [uncertainty_file PATH|none]
                [uncertainty_threshold SIGMA] [uncertainty_action warn|stop]
     pair_coeff * * Cu Ni Pt ...   (one element per LAMMPS atom type)
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_ALCHEMICAL_H
#define LMP_PAIR_ALCHEMICAL_H

#include "pair.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace alchem {
class AlchemicalModel;
struct EvaluationInput;
struct EvaluationOutput;
}    // namespace alchem

namespace LAMMPS_NS {

class PairAlchemical : public Pair {
 public:
  explicit PairAlchemical(class LAMMPS *);
  ~PairAlchemical() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  double memory_usage() override;
  void finish() override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;

 protected:
  // pairs of one neighbor list requested by the model, rebuilt every step
  // from the candidate pairs (which change only when LAMMPS rebuilds its list)
  struct ModelList {
    double cutoff = 0.0;
    double cutoff2 = 0.0;
    bool full_list = true;
    // the first n_selected entries are this step's (the buffers keep their
    // largest size)
    std::vector<int32_t> selected;             // candidate ids inside the cutoff
    std::vector<int32_t> previous_selected;    // same, at the previous step
    std::vector<int32_t> model_samples;        // n x 5: first, second, 0, 0, 0 (model atoms)
    size_t n_selected = 0;
    size_t n_previous = 0;
    bool selection_changed() const;
  };

  // default of the chunk keyword: owned atoms per forward + backward pass of
  // the model (see docs/lammps.md for the measurements behind it)
  static constexpr int DEFAULT_CHUNK = 1024;

  // the keywords of pair_style alchemical after the model file
  struct Keywords {
    std::string device;    // "": the model's preferred device that is available
    std::string extensions;
    bool extensions_given = false;
    bool check_consistency = false;
    int threads = 0;    // 0: LAMMPS' OpenMP threads per rank
    bool malloc_reuse = true;
    bool chunk_given = false;
    int chunk = DEFAULT_CHUNK;    // owned atoms per evaluation, 0: all
    std::string pair_ops;         // "": loops on the CPU, torch on a GPU
    bool profile = false;
    bool swap_cache = true;
    std::string swap_trace;                // "": none
    int uncertainty = 0;                   // evaluate the uncertainty every N steps, 0: never
    std::string uncertainty_file;          // "": none
    double uncertainty_threshold = 0.0;    // 0: none
    bool uncertainty_stop = false;         // above the threshold: stop (else warn)
  };

  // the steps of settings(), in order
  Keywords parse_keywords(int narg, char **arg);
  std::pair<std::string, std::string> engine_units_or_error();
  std::string extensions_folder(const Keywords &);
  void load_model(const Keywords &, const std::string &extensions,
                  const std::pair<std::string, std::string> &units);
  void choose_chunk(const Keywords &);
  void log_settings(const Keywords &, const std::string &extensions, bool glibc,
                    const std::pair<std::string, std::string> &units);

  void allocate();
  void select_pairs(ModelList &);
  void build_candidates();
  void number_atoms();
  void gather_atoms();
  void prepare_input(bool rebuilt, bool energy_only);
  void log_torch_warnings(const alchem::EvaluationOutput &);
  void check_finite(const alchem::EvaluationOutput &);
  void accumulate(const alchem::EvaluationOutput &);
  void add_pair_forces(const ModelList &, const double *gradient, double *w);
  void add_position_forces(const double *gradient, double *w);
  void tally_atom_virial(int i, const double *wp, double scale);
  void setup_close_contacts();
  void check_close_contacts();

  // the model's uncertainty on some steps (pair_alchemical_uncertainty.cpp)
  void parse_uncertainty_keyword(const std::string &keyword, const std::string &value, Keywords &);
  void setup_uncertainty(const Keywords &);
  bool uncertainty_step();
  void uncertainty_results(const alchem::EvaluationOutput &);
  void reduce_uncertainty(const alchem::EvaluationOutput &);
  void report_uncertainty();

  // energy-only evaluations during fix atom/swap's Monte Carlo trials
  // (pair_alchemical_swap.cpp)
  bool monte_carlo_trial();
  void index_candidates();
  bool only_types_changed();
  void local_trial_energy();
  void undo_rejected_trial();
  void find_affected_atoms();
  void evaluate_affected_atoms();
  void build_trial_system(const std::vector<int32_t> &affected);
  void fill_swap_cache(const alchem::EvaluationOutput &);
  void trace_trial_energy(double energy);
  void finish_swap_summary();

  std::unique_ptr<alchem::AlchemicalModel> model_;
  std::unique_ptr<alchem::EvaluationInput> input_;
  std::unique_ptr<alchem::EvaluationOutput> output_;
  std::string model_path_;
  std::string unit_style_;     // LAMMPS units the model was set up for
  std::string energy_unit_;    // LAMMPS' energy unit, as metatomic names it

  std::vector<int32_t> type_to_z_;    // LAMMPS type -> atomic number

  // the atoms given to the model: all owned atoms (same indices as in LAMMPS)
  // then the ghosts that are in at least one candidate pair (numbered when
  // LAMMPS rebuilds its list); the others can not change the energy of owned
  // atoms
  std::vector<int32_t> model_index_;    // LAMMPS index -> model index, or -1
  std::vector<int32_t> model_atoms_;    // model index -> LAMMPS index
  std::vector<double> positions_;       // model atoms x 3
  std::vector<int32_t> types_;          // atomic numbers of the model atoms
  std::vector<ModelList> lists_;

  // candidate pairs (first, second) from LAMMPS' full list
  std::vector<int32_t> candidate_first_;
  std::vector<int32_t> candidate_second_;
  std::vector<size_t> ghost_offsets_;    // build_candidates' counting sort
  bigint last_build_ = -1;
  int last_nall_ = -1;

  double cutoff_ = 0.0;             // neighbor/ghost cutoff asked from LAMMPS
  bool ghost_centers_ = false;      // message passing: pairs between ghosts too
  int chunk_ = 0;                   // owned atoms per evaluation of the model, 0: all
  std::set<std::string> warned_;    // torch warnings already in the log

  // keyword swap_cache: during fix atom/swap's trials, evaluate the energy only
  // (forward pass), and when only atom types changed since the last evaluation,
  // only the owned atoms with a changed atom within the cutoff
  bool swap_cache_ = true;
  struct SwapCache {
    bool valid = false;
    bigint build = -1;    // neighbor->ncalls of the cached evaluation
    int nlocal = -1;
    double box[9] = {};               // boxlo, boxhi, xy, xz, yz
    double total = 0.0;               // energy of the owned atoms at the full evaluation
    std::vector<double> reference;    // per-atom energies at the full evaluation
    std::vector<double> energies;     // per-atom energies now (owned atoms)
    // the previous trial's changes: (model atom, atomic number before) and
    // (owned atom, energy before)
    std::vector<std::pair<int32_t, int32_t>> undo_types;
    std::vector<std::pair<int32_t, double>> undo_energies;
    bool undo_valid = false;
  } swap_;
  // candidate pairs of LAMMPS atom i: [candidate_offsets_[i], candidate_offsets_[i + 1])
  std::vector<size_t> candidate_offsets_;
  bool candidates_grouped_ = false;    // candidates come grouped by first atom
  // the model's cached pair metadata belongs to a trial's small system: the next
  // full evaluation sends its pairs again
  bool model_pairs_stale_ = false;
  // the small system of a local trial: affected owned atoms first, then their
  // neighbours (model atom -> trial atom, -1: not in it)
  std::unique_ptr<alchem::EvaluationInput> trial_input_;
  std::unique_ptr<alchem::EvaluationOutput> trial_output_;
  std::vector<int32_t> trial_index_;
  std::vector<int32_t> trial_atoms_;    // trial atom -> model atom
  std::vector<double> trial_positions_;
  std::vector<int32_t> trial_types_;
  std::vector<std::vector<int32_t>> trial_samples_;    // per list, rows of 5
  std::vector<int32_t> changed_;                       // model atoms whose element changed
  std::vector<int32_t> affected_;                      // owned atoms to re-evaluate
  std::vector<char> affected_mark_;
  // counts for the summary at the end of a run, and the swap_trace file
  bigint swap_local_ = 0;
  bigint swap_full_ = 0;
  bigint swap_atoms_ = 0;    // owned atoms re-evaluated by the local trials
  double swap_local_time_ = 0.0;
  std::string swap_trace_path_;    // keyword swap_trace: <prefix>.<rank>, "": none
  FILE *swap_trace_ = nullptr;

  // close contacts: pairs nearer than CLOSE_CONTACT_MARGIN x the shortest
  // distance of their elements in the training data (metadata extra
  // "alchem.shortest_distances"), squared, per pair of LAMMPS types (0: no check)
  std::vector<double> close2_;
  bool check_close_ = false;    // until the first warning

  // keywords uncertainty*: the model's energy uncertainty every
  // uncertainty_every_ steps, and on the steps `fix pair ... uncertainty 1`
  // asks for (uncertainty_trigger_, set by that fix, see extract())
  int uncertainty_every_ = 0;
  int uncertainty_trigger_ = 0;
  double uncertainty_threshold_ = 0.0;    // 0: none
  bool uncertainty_stop_ = false;
  std::string uncertainty_path_;    // the deviation file ("": none), written by rank 0
  FILE *uncertainty_file_ = nullptr;
  bigint uncertainty_written_ = -1;    // last step in the deviation file
  // per owned atom (LAMMPS index) at the last uncertainty step, for fix pair
  std::vector<double> atom_sigma_;
  // over all ranks at the last uncertainty step: max, min, mean per-atom sigma,
  // total-energy sigma, and the tag of the atom with the max
  double sigma_max_ = 0.0, sigma_min_ = 0.0, sigma_mean_ = 0.0, sigma_total_ = 0.0;
  tagint sigma_max_tag_ = 0;
  bigint uncertainty_step_ = -1;    // the step of these values, -1: none yet

  // time spent in each part of compute(), printed by finish() with `profile on`
  bool profile_ = false;
  bigint profile_calls_ = 0;
  bigint profile_evaluations_ = 0;
  double profile_times_[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
};

}    // namespace LAMMPS_NS

#endif
