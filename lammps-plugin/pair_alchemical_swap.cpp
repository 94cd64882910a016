/* ----------------------------------------------------------------------
   pair_style alchemical during the Monte Carlo trials of fix atom/swap
   (keyword swap_cache, default yes).

   fix atom/swap (canonical swaps and `semi-grand yes`) changes atom types and
   calls pair->compute(eflag = 1, vflag = 0) for the energy of the whole box,
   once before its trials and once per trial, inside its pre_exchange(), with
   its flag mc_active set. The forces these calls add to atom->f are never
   used: fix atom/swap forces a neighbor list build on its steps, and LAMMPS
   clears the forces and evaluates them again after pre_exchange(), at the same
   step, before they move any atom. So during the trials the model runs
   forward only (no backward pass) and keeps its per-atom energies; when only
   atom types changed since then (same neighbor list build, same number of
   atoms, the same box and bitwise the same positions), it evaluates only the
   owned atoms that have an atom of changed element within the cutoff, on a
   small system of those atoms and their neighbors, and returns
     E = E_full + sum_i (e_i - e_i,full)
   over the owned atoms, e_i the latest energy of atom i. Ghost atoms take the
   new types through fix atom/swap's own forward communication; each rank
   updates its owned atoms.

   Anything else (a new neighbor list, other positions or box, a new
   pair_style or pair_coeff, a run's init) evaluates everything again.
   Models whose energy reaches beyond their neighbor lists (message passing)
   or which give no per-atom energies run forward over all atoms.
------------------------------------------------------------------------- */

// LAMMPS headers first: they bring their own copy of {fmt}.
#include "pair_alchemical.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "fix.h"
#include "modify.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include "alchemical_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

using namespace LAMMPS_NS;

namespace {

void box_of(const Domain *domain, double *box)
{
  for (int d = 0; d < 3; d++) {
    box[d] = domain->boxlo[d];
    box[3 + d] = domain->boxhi[d];
  }
  box[6] = domain->xy;
  box[7] = domain->xz;
  box[8] = domain->yz;
}

}    // namespace

/* ----------------------------------------------------------------------
   true inside the trials of a fix atom/swap (its mc_active flag, which it
   sets for the whole of its pre_exchange)
------------------------------------------------------------------------- */

bool PairAlchemical::monte_carlo_trial()
{
  for (Fix *fix : modify->get_fix_list()) {
    if (strcmp(fix->style, "atom/swap") != 0) continue;
    int dim = -1;
    const auto *active = static_cast<const int *>(fix->extract("mc_active", dim));
    if (active != nullptr && dim == 0 && *active != 0) return true;
  }
  return false;
}

/* ----------------------------------------------------------------------
   where each atom's candidate pairs start (build_candidates groups them by
   first atom); a list that is not grouped turns the local trials off
------------------------------------------------------------------------- */

void PairAlchemical::index_candidates()
{
  const int nall = atom->nlocal + atom->nghost;
  candidate_offsets_.assign(nall + 1, 0);
  candidates_grouped_ = true;
  const size_t n = candidate_first_.size();
  for (size_t c = 0; c < n; c++) {
    if (c > 0 && candidate_first_[c] < candidate_first_[c - 1]) {
      candidates_grouped_ = false;
      return;
    }
    candidate_offsets_[candidate_first_[c] + 1]++;
  }
  for (int i = 0; i < nall; i++) candidate_offsets_[i + 1] += candidate_offsets_[i];
}

/* ----------------------------------------------------------------------
   the per-atom energies of a trial's full evaluation start the cache
------------------------------------------------------------------------- */

void PairAlchemical::fill_swap_cache(const alchem::EvaluationOutput &output)
{
  const int nlocal = atom->nlocal;
  swap_full_++;
  swap_.valid = candidates_grouped_ && !ghost_centers_ && model_->supports_per_atom_energy();
  if (!swap_.valid) return;
  swap_.build = neighbor->ncalls;
  swap_.nlocal = nlocal;
  box_of(domain, swap_.box);
  swap_.total = nlocal > 0 ? output.energy : 0.0;
  if (nlocal > 0) {
    swap_.reference.assign(output.atom_energies.begin(), output.atom_energies.begin() + nlocal);
  } else {
    swap_.reference.clear();
  }
  swap_.energies = swap_.reference;
  swap_.undo_valid = false;
  affected_mark_.assign(nlocal, 0);
}

/* ----------------------------------------------------------------------
   only atom types changed since the cached evaluation: the same neighbor
   list build and atoms, the same box, bitwise the same positions (those of
   the model's atoms; the others change no energy)
------------------------------------------------------------------------- */

bool PairAlchemical::only_types_changed()
{
  const int nlocal = atom->nlocal;
  if (!swap_.valid || neighbor->ncalls != swap_.build || neighbor->ncalls != last_build_ ||
      nlocal != swap_.nlocal || nlocal + atom->nghost != last_nall_) {
    return false;
  }
  double box[9];
  box_of(domain, box);
  if (!std::equal(box, box + 9, swap_.box)) return false;
  double **x = atom->x;
  const auto n_atoms = model_atoms_.size();
  const double *cached = positions_.data();
  for (size_t a = 0; a < n_atoms; a++) {
    const double *xi = x[model_atoms_[a]];
    if (xi[0] != cached[3 * a] || xi[1] != cached[3 * a + 1] || xi[2] != cached[3 * a + 2]) {
      return false;
    }
  }
  return true;
}

/* ----------------------------------------------------------------------
   a trial: re-evaluate the owned atoms with an atom of changed element
   within the cutoff, and return the energy of all owned atoms
------------------------------------------------------------------------- */

void PairAlchemical::local_trial_energy()
{
  const int nlocal = atom->nlocal;
  undo_rejected_trial();
  find_affected_atoms();

  // what this trial changes, for undo_rejected_trial() at the next one
  swap_.undo_types.clear();
  swap_.undo_energies.clear();
  for (const int32_t a : changed_) swap_.undo_types.emplace_back(a, types_[a]);
  for (const int32_t i : affected_) swap_.undo_energies.emplace_back(i, swap_.energies[i]);
  swap_.undo_valid = true;

  if (!affected_.empty()) evaluate_affected_atoms();
  const int *type = atom->type;
  for (const int32_t a : changed_) types_[a] = type_to_z_[type[model_atoms_[a]]];

  // E_full + sum of the changes: atoms never re-evaluated add exactly zero
  double change = 0.0;
  for (int i = 0; i < nlocal; i++) change += swap_.energies[i] - swap_.reference[i];
  const double energy = swap_.total + change;
  if (eflag_global) eng_vdwl += energy;
  if (eflag_atom) {
    for (int i = 0; i < nlocal; i++) eatom[i] += swap_.energies[i];
  }
  swap_local_++;
  swap_atoms_ += static_cast<bigint>(affected_.size());
  trace_trial_energy(energy);
}

/* ----------------------------------------------------------------------
   fix atom/swap puts back the types of a rejected trial (ghosts: at its next
   trial's communication). When every atom the previous trial changed has its
   type from before that trial again, the energies from before it hold again:
   the next trial re-evaluates the atoms around its own swap only.
------------------------------------------------------------------------- */

void PairAlchemical::undo_rejected_trial()
{
  if (!swap_.undo_valid) return;
  swap_.undo_valid = false;
  const int *type = atom->type;
  for (const auto &item : swap_.undo_types) {
    if (type_to_z_[type[model_atoms_[item.first]]] != item.second) return;
  }
  for (const auto &item : swap_.undo_types) types_[item.first] = item.second;
  for (const auto &item : swap_.undo_energies) swap_.energies[item.first] = item.second;
}

/* model atoms whose element changed (changed_), and the owned atoms within the
   cutoff of one of them or changed themselves (affected_, sorted) */

void PairAlchemical::find_affected_atoms()
{
  const int nlocal = atom->nlocal;
  const int *type = atom->type;
  double **x = atom->x;
  changed_.clear();
  const auto n_atoms = model_atoms_.size();
  for (size_t a = 0; a < n_atoms; a++) {
    if (type_to_z_[type[model_atoms_[a]]] != types_[a]) changed_.push_back(static_cast<int32_t>(a));
  }

  double cutoff2 = 0.0;
  for (const auto &model_list : lists_) cutoff2 = std::max(cutoff2, model_list.cutoff2);
  affected_.clear();
  auto mark = [&](int32_t i) {
    if (i < nlocal && !affected_mark_[i]) {
      affected_mark_[i] = 1;
      affected_.push_back(i);
    }
  };
  for (const int32_t a : changed_) {
    const int c = model_atoms_[a];
    mark(c);
    for (size_t p = candidate_offsets_[c]; p < candidate_offsets_[c + 1]; p++) {
      const int j = candidate_second_[p];
      const double dx = x[j][0] - x[c][0];
      const double dy = x[j][1] - x[c][1];
      const double dz = x[j][2] - x[c][2];
      if (dx * dx + dy * dy + dz * dz < cutoff2) mark(j);
    }
  }
  std::sort(affected_.begin(), affected_.end());
  for (const int32_t i : affected_) affected_mark_[i] = 0;
}

/* the new energies of the affected atoms, from the model on their small system */

void PairAlchemical::evaluate_affected_atoms()
{
  build_trial_system(affected_);
  try {
    model_->compute(*trial_input_, *trial_output_);
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style alchemical: the model failed: {}", e.what());
  }
  model_pairs_stale_ = true;
  for (size_t s = 0; s < affected_.size(); s++) {
    const int32_t i = affected_[s];
    const double energy = trial_output_->atom_energies[s];
    if (!std::isfinite(energy)) {
      double **x = atom->x;
      error->one(FLERR,
                 "pair_style alchemical: the model {} gave a non-finite energy (NaN or inf) in "
                 "a fix atom/swap trial at step {} for atom {} (type {}, at {:.6g} {:.6g} "
                 "{:.6g}) on rank {}: the run stops here",
                 model_path_, update->ntimestep, atom->tag[i], atom->type[i], x[i][0], x[i][1],
                 x[i][2], comm->me);
    }
    swap_.energies[i] = energy;
  }
}

/* ----------------------------------------------------------------------
   the small system of a trial: the affected owned atoms first (they are the
   selected atoms 0..k-1), then every atom in a pair with one of them. Pairs:
   with a full list, those of the affected atoms, then the reverse pairs of
   their other neighbors, sorted by first atom as the pair style's lists are;
   with a half list, each pair touching an affected atom once, in the order
   of the full evaluation (lower LAMMPS index first). These are the pairs of
   the full evaluation that touch the affected atoms, with the same vectors,
   so the affected atoms get the energies of a full evaluation.
------------------------------------------------------------------------- */

void PairAlchemical::build_trial_system(const std::vector<int32_t> &affected)
{
  const int *type = atom->type;
  double **x = atom->x;
  const auto n_atoms = model_atoms_.size();
  if (trial_index_.size() < n_atoms) trial_index_.resize(n_atoms, -1);
  trial_atoms_.clear();
  auto add_atom = [&](int32_t a) {
    if (trial_index_[a] < 0) {
      trial_index_[a] = static_cast<int32_t>(trial_atoms_.size());
      trial_atoms_.push_back(a);
    }
    return trial_index_[a];
  };
  // owned atoms are model atoms with the same index
  for (const int32_t i : affected) add_atom(i);
  const auto n_selected = static_cast<int32_t>(affected.size());

  trial_samples_.resize(lists_.size());
  std::vector<std::pair<int32_t, int32_t>> reverse;
  for (size_t k = 0; k < lists_.size(); k++) {
    const auto &model_list = lists_[k];
    auto &samples = trial_samples_[k];
    samples.clear();
    reverse.clear();
    auto push = [&](int32_t first, int32_t second) {
      samples.insert(samples.end(), {first, second, 0, 0, 0});
    };
    for (const int32_t i : affected) {
      for (size_t p = candidate_offsets_[i]; p < candidate_offsets_[i + 1]; p++) {
        const int j = candidate_second_[p];
        const double dx = x[j][0] - x[i][0];
        const double dy = x[j][1] - x[i][1];
        const double dz = x[j][2] - x[i][2];
        if (dx * dx + dy * dy + dz * dz >= model_list.cutoff2) continue;
        const int32_t tj = add_atom(model_index_[j]);
        const bool j_selected = tj < n_selected;
        if (model_list.full_list) {
          push(trial_index_[i], tj);
          if (!j_selected) reverse.emplace_back(tj, trial_index_[i]);
        } else if (!j_selected || i < j) {
          // the full evaluation keeps (lower, higher) LAMMPS index
          if (i < j) {
            push(trial_index_[i], tj);
          } else {
            push(tj, trial_index_[i]);
          }
        }
      }
    }
    std::stable_sort(reverse.begin(), reverse.end(),
                     [](const auto &a, const auto &b) { return a.first < b.first; });
    for (const auto &pair : reverse) push(pair.first, pair.second);
  }

  const auto n_trial = trial_atoms_.size();
  trial_positions_.resize(3 * n_trial);
  trial_types_.resize(n_trial);
  for (size_t t = 0; t < n_trial; t++) {
    const int i = model_atoms_[trial_atoms_[t]];
    trial_positions_[3 * t] = x[i][0];
    trial_positions_[3 * t + 1] = x[i][1];
    trial_positions_[3 * t + 2] = x[i][2];
    trial_types_[t] = type_to_z_[type[i]];
    trial_index_[trial_atoms_[t]] = -1;    // clean for the next trial
  }

  auto &input = *trial_input_;
  input.n_local = n_selected;
  input.n_total = static_cast<int64_t>(n_trial);
  input.positions = trial_positions_.data();
  input.types = trial_types_.data();
  input.pairs.resize(lists_.size());
  for (size_t k = 0; k < lists_.size(); k++) {
    input.pairs[k].samples = trial_samples_[k].data();
    input.pairs[k].n_pairs = static_cast<int64_t>(trial_samples_[k].size() / 5);
    input.pairs[k].samples_changed = true;
  }
  input.per_atom_energy = true;
  input.need_gradients = false;
  input.pair_gradients = false;
  input.chunk = 0;
}

/* ----------------------------------------------------------------------
   keyword swap_trace <prefix>: each rank writes the energy of its owned atoms
   at every evaluation of a trial to <prefix>.<rank> (tests compare the local
   and the full evaluations trial by trial)
------------------------------------------------------------------------- */

void PairAlchemical::trace_trial_energy(double energy)
{
  if (swap_trace_path_.empty()) return;
  if (swap_trace_ == nullptr) {
    const std::string path = fmt::format("{}.{}", swap_trace_path_, comm->me);
    swap_trace_ = fopen(path.c_str(), "w");
    if (swap_trace_ == nullptr) {
      error->one(FLERR, "pair_style alchemical: cannot write the swap_trace file {}: {}", path,
                 utils::getsyserror());
    }
  }
  fputs(fmt::format("{} {:.17g}\n", update->ntimestep, energy).c_str(), swap_trace_);
}

void PairAlchemical::finish_swap_summary()
{
  if (swap_local_ + swap_full_ == 0) return;
  if (swap_trace_ != nullptr) fflush(swap_trace_);
  std::string message = fmt::format(
      "pair_style alchemical: fix atom/swap on rank {}: {} energy evaluations, {} local", comm->me,
      swap_local_ + swap_full_, swap_local_);
  if (swap_local_ > 0) {
    message += fmt::format(" ({:.1f} owned atoms re-evaluated, {:.3f} ms each on average)",
                           static_cast<double>(swap_atoms_) / static_cast<double>(swap_local_),
                           1e3 * swap_local_time_ / static_cast<double>(swap_local_));
  }
  message += fmt::format(", {} of all atoms (energy only)\n", swap_full_);
  utils::logmesg(lmp, message);
  swap_local_ = 0;
  swap_full_ = 0;
  swap_atoms_ = 0;
  swap_local_time_ = 0.0;
}
