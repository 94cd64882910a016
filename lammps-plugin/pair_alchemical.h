/* -*- c++ -*- ----------------------------------------------------------
   pair_style alchemical: metatomic machine-learned potentials (the alchem
   project's SOAP-BPNN and Alchemical Model, or any metatomic energy model)
   in LAMMPS, loaded as a plugin.

     pair_style alchemical model.pt [device cpu|cuda|cuda:N]
                [extensions DIR|none] [check_consistency on|off] [threads N]
                [chunk N|all] [malloc_reuse on|off] [pair_ops loops|torch]
                [profile on|off]
     pair_coeff * * Cu Ni Pt ...   (one element per LAMMPS atom type)
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_ALCHEMICAL_H
#define LMP_PAIR_ALCHEMICAL_H

#include "pair.h"

#include <cstdint>
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
  void prepare_input(bool rebuilt);
  void log_torch_warnings(const alchem::EvaluationOutput &);
  void check_finite(const alchem::EvaluationOutput &);
  void accumulate(const alchem::EvaluationOutput &);
  void add_pair_forces(const ModelList &, const double *gradient, double *w);
  void add_position_forces(const double *gradient, double *w);
  void tally_atom_virial(int i, const double *wp, double scale);
  void setup_close_contacts();
  void check_close_contacts();

  std::unique_ptr<alchem::AlchemicalModel> model_;
  std::unique_ptr<alchem::EvaluationInput> input_;
  std::unique_ptr<alchem::EvaluationOutput> output_;
  std::string model_path_;
  std::string unit_style_;    // LAMMPS units the model was set up for

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

  // close contacts: pairs nearer than CLOSE_CONTACT_MARGIN x the shortest
  // distance of their elements in the training data (metadata extra
  // "alchem.shortest_distances"), squared, per pair of LAMMPS types (0: no check)
  std::vector<double> close2_;
  bool check_close_ = false;    // until the first warning

  // time spent in each part of compute(), printed by finish() with `profile on`
  bool profile_ = false;
  bigint profile_calls_ = 0;
  bigint profile_evaluations_ = 0;
  double profile_times_[5] = {0.0, 0.0, 0.0, 0.0, 0.0};
};

}    // namespace LAMMPS_NS

#endif
