/* ----------------------------------------------------------------------
   pair_style alchemical: the model's energy uncertainty during MD (keywords
   uncertainty, uncertainty_file, uncertainty_threshold, uncertainty_action;
   docs/lammps.md).

   On an uncertainty step (every N steps, or when `fix pair ... uncertainty 1`
   asks), the model call that gives the forces also returns, in the same
   forward pass, each owned atom's energy sigma (output energy_uncertainty,
   per atom) and, per chunk, alchem::energy_uncertainty_projection: s R with s
   the summed last-layer features of the chunk's owned atoms and C = R R^T. It
   is additive over atoms, so its sum over chunks and MPI ranks is that of the
   whole system and its norm the sigma of the total energy. Other steps request
   the energy only.

   Results: the per-atom sigma for fix pair (extract_peratom "uncertainty"),
   the global max, total, min and mean for compute pair (pvector), a
   deviation file (rank 0) and the threshold's warning or stop.
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring their own copy of {fmt}.
#include "pair_alchemical.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "update.h"
#include "utils.h"

#include "alchemical_model.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

using namespace LAMMPS_NS;

/* the value of one of the keywords uncertainty* (parse_keywords checked the name) */

void PairAlchemical::parse_uncertainty_keyword(const std::string &keyword, const std::string &value,
                                               Keywords &keywords)
{
  if (keyword == "uncertainty") {
    keywords.uncertainty = utils::inumeric(FLERR, value, false, lmp);
    if (keywords.uncertainty < 0) {
      error->all(FLERR,
                 "pair_style alchemical: invalid value '{}' for keyword 'uncertainty', "
                 "expected a number of steps N >= 1 (evaluate the uncertainty every N "
                 "steps) or 0 (never)",
                 value);
    }
  } else if (keyword == "uncertainty_file") {
    keywords.uncertainty_file = value == "none" ? "" : value;
  } else if (keyword == "uncertainty_threshold") {
    keywords.uncertainty_threshold = utils::numeric(FLERR, value, false, lmp);
    if (!(keywords.uncertainty_threshold > 0.0)) {
      error->all(FLERR,
                 "pair_style alchemical: invalid value '{}' for keyword "
                 "'uncertainty_threshold', expected a per-atom energy sigma > 0 (LAMMPS "
                 "energy unit)",
                 value);
    }
  } else if (keyword == "uncertainty_action") {
    if (value != "warn" && value != "stop") {
      error->all(FLERR,
                 "pair_style alchemical: invalid value '{}' for keyword "
                 "'uncertainty_action', expected warn or stop",
                 value);
    }
    keywords.uncertainty_stop = value == "stop";
  }
}

/* the keywords' settings; the model must have the uncertainty outputs */

void PairAlchemical::setup_uncertainty(const Keywords &keywords)
{
  uncertainty_every_ = keywords.uncertainty;
  uncertainty_threshold_ = keywords.uncertainty_threshold;
  uncertainty_stop_ = keywords.uncertainty_stop;
  uncertainty_path_ = keywords.uncertainty_file;
  uncertainty_step_ = -1;
  uncertainty_written_ = -1;
  uncertainty_trigger_ = 0;
  if (uncertainty_file_ != nullptr) fclose(uncertainty_file_);
  uncertainty_file_ = nullptr;

  const bool asked = uncertainty_every_ > 0 || !uncertainty_path_.empty() ||
                     uncertainty_threshold_ > 0.0 || uncertainty_stop_;
  if (asked && !model_->has_uncertainty()) {
    error->all(FLERR,
               "pair_style alchemical: the model {} has no uncertainty (no energy_uncertainty "
               "output), which the uncertainty keywords need: add it to the model's checkpoint "
               "with `alchem-uncertainty model.ckpt` (it writes model.pt again), or leave these "
               "keywords out",
               model_path_);
  }
  if (asked && uncertainty_every_ == 0) {
    error->all(FLERR,
               "pair_style alchemical: uncertainty_file, uncertainty_threshold and "
               "uncertainty_action need `uncertainty N` with N >= 1 (evaluate the uncertainty "
               "every N steps)");
  }
  if (uncertainty_stop_ && uncertainty_threshold_ <= 0.0) {
    error->all(FLERR, "pair_style alchemical: uncertainty_action stop needs uncertainty_threshold "
                      "<sigma> (the per-atom energy sigma above which the run stops)");
  }
  if (uncertainty_path_.empty()) return;

  int opened = 1;
  if (comm->me == 0) {
    uncertainty_file_ = fopen(uncertainty_path_.c_str(), "w");
    if (uncertainty_file_ == nullptr) {
      opened = 0;
    } else {
      fputs(fmt::format("# {:>10} {:>18} {:>18} {:>18} {:>18}   (energy sigmas in {}; "
                        "max, min and mean over atoms, then of the total energy)\n",
                        "step", "max_atom_sigma", "min_atom_sigma", "mean_atom_sigma",
                        "total_sigma", energy_unit_)
                .c_str(),
            uncertainty_file_);
      fflush(uncertainty_file_);
    }
  }
  MPI_Bcast(&opened, 1, MPI_INT, 0, world);
  if (opened == 0) {
    error->all(FLERR, "pair_style alchemical: cannot write uncertainty_file '{}': {}",
               uncertainty_path_, utils::getsyserror());
  }
}

/* after the model call of an uncertainty step (collective; a rank without
   atoms passes an empty output) */

void PairAlchemical::uncertainty_results(const alchem::EvaluationOutput &output)
{
  reduce_uncertainty(output);
  report_uncertainty();
}

/* whether this evaluation asks for the uncertainty (the same on every rank) */

bool PairAlchemical::uncertainty_step()
{
  if (!model_->has_uncertainty()) return false;
  if (uncertainty_trigger_ != 0) return true;
  return uncertainty_every_ > 0 && update->ntimestep % uncertainty_every_ == 0;
}

/* ----------------------------------------------------------------------
   the per-atom sigma of the owned atoms, and over all ranks the max (and its
   atom's tag), min, mean and the total-energy sigma |sum_ranks sum_chunks sR|.
   Collective: every rank calls it on the same steps, with or without atoms.
------------------------------------------------------------------------- */

void PairAlchemical::reduce_uncertainty(const alchem::EvaluationOutput &output)
{
  const int nlocal = atom->nlocal;
  atom_sigma_.assign(std::max(atom->nmax, 1), 0.0);
  double local_max = -std::numeric_limits<double>::infinity();
  double local_min = std::numeric_limits<double>::infinity();
  double sums[2] = {0.0, static_cast<double>(nlocal)};    // sum of sigma, atoms
  tagint max_tag = 0;
  for (int i = 0; i < nlocal && !output.atom_uncertainty.empty(); i++) {
    const double sigma = output.atom_uncertainty[i];
    atom_sigma_[i] = sigma;
    sums[0] += sigma;
    local_min = std::min(local_min, sigma);
    if (sigma > local_max) {
      local_max = sigma;
      max_tag = atom->tag_enable ? atom->tag[i] : i + 1;
    }
  }

  struct {
    double value;
    int rank;
  } mine{local_max, comm->me}, top{};
  MPI_Allreduce(&mine, &top, 1, MPI_DOUBLE_INT, MPI_MAXLOC, world);
  MPI_Bcast(&max_tag, 1, MPI_LMP_TAGINT, top.rank, world);
  double global_min = 0.0;
  MPI_Allreduce(&local_min, &global_min, 1, MPI_DOUBLE, MPI_MIN, world);
  double global_sums[2] = {0.0, 0.0};
  MPI_Allreduce(sums, global_sums, 2, MPI_DOUBLE, MPI_SUM, world);

  // a rank without atoms has no projection: its length from the others
  int dimension = static_cast<int>(output.uncertainty_projection.size());
  int global_dimension = 0;
  MPI_Allreduce(&dimension, &global_dimension, 1, MPI_INT, MPI_MAX, world);
  std::vector<double> projection(output.uncertainty_projection);
  projection.resize(global_dimension, 0.0);
  std::vector<double> total(global_dimension, 0.0);
  MPI_Allreduce(projection.data(), total.data(), global_dimension, MPI_DOUBLE, MPI_SUM, world);
  double squares = 0.0;
  for (const double value : total) squares += value * value;

  sigma_max_ = top.value;
  sigma_max_tag_ = max_tag;
  sigma_min_ = global_min;
  sigma_mean_ = global_sums[1] > 0.0 ? global_sums[0] / global_sums[1] : 0.0;
  sigma_total_ = std::sqrt(squares);
  uncertainty_step_ = update->ntimestep;

  // compute pair sums pvector over the ranks: the values on rank 0 only
  const double values[4] = {sigma_max_, sigma_total_, sigma_min_, sigma_mean_};
  for (int k = 0; k < nextra; k++) pvector[k] = comm->me == 0 ? values[k] : 0.0;
}

/* the deviation file's row (rank 0) and the threshold's warning or stop */

void PairAlchemical::report_uncertainty()
{
  const bigint step = update->ntimestep;
  if (uncertainty_file_ != nullptr && step != uncertainty_written_) {
    fputs(fmt::format("{:>12} {:>18.10e} {:>18.10e} {:>18.10e} {:>18.10e}\n", step, sigma_max_,
                      sigma_min_, sigma_mean_, sigma_total_)
              .c_str(),
          uncertainty_file_);
    fflush(uncertainty_file_);
    uncertainty_written_ = step;
  }
  if (!(uncertainty_threshold_ > 0.0) || !(sigma_max_ > uncertainty_threshold_)) return;
  if (uncertainty_stop_) {
    error->all(FLERR,
               "pair_style alchemical: at step {} the energy uncertainty of atom {} is {:.6g} "
               "{}, above uncertainty_threshold {} (uncertainty_action stop): the run stops "
               "here. The model extrapolates: add such structures to its training data",
               step, sigma_max_tag_, sigma_max_, energy_unit_, uncertainty_threshold_);
  }
  if (comm->me == 0) {
    error->warning(FLERR,
                   "pair_style alchemical: at step {} the energy uncertainty of atom {} is "
                   "{:.6g} {}, above uncertainty_threshold {}: the model extrapolates there",
                   step, sigma_max_tag_, sigma_max_, energy_unit_, uncertainty_threshold_);
  }
}

/* fix pair's trigger: `fix ID group pair N alchemical uncertainty 1` sets it on
   its steps, so that the uncertainty is evaluated there */

void *PairAlchemical::extract(const char *name, int &dim)
{
  if (strcmp(name, "uncertainty_flag") != 0) return nullptr;
  if (!model_ || !model_->has_uncertainty()) {
    error->all(FLERR,
               "pair_style alchemical: the per-atom uncertainty was requested (fix pair) but "
               "the model {} has none: add it with `alchem-uncertainty model.ckpt`",
               model_path_);
  }
  dim = 0;
  return &uncertainty_trigger_;
}

/* the per-atom energy sigma of the owned atoms at the last uncertainty step,
   for fix pair (its values are copied on the fix's steps, which must be
   uncertainty steps: its N a multiple of `uncertainty N`, or its flag 1) */

void *PairAlchemical::extract_peratom(const char *name, int &ncol)
{
  if (strcmp(name, "uncertainty") != 0) return nullptr;
  if (!model_ || !model_->has_uncertainty()) {
    error->all(FLERR,
               "pair_style alchemical: the per-atom uncertainty was requested (fix pair) but "
               "the model {} has none: add it with `alchem-uncertainty model.ckpt`",
               model_path_);
  }
  ncol = 0;
  // during a run (not when fix pair is defined): only this step's values,
  // stale ones would belong to atoms that may have moved to other indices
  if (update->whichflag != 0 && uncertainty_step_ != update->ntimestep) {
    error->all(FLERR,
               "pair_style alchemical: fix pair asked for the per-atom uncertainty at step {}, "
               "which is not an uncertainty step (last: {}): give fix pair a multiple of the "
               "keyword `uncertainty N` as its N, or the flag 1 (`fix ID all pair N alchemical "
               "uncertainty 1`) so that it asks for the evaluation",
               update->ntimestep, uncertainty_step_);
  }
  if (atom_sigma_.empty()) atom_sigma_.assign(std::max(atom->nmax, 1), 0.0);
  return atom_sigma_.data();
}
