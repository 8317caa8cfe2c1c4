/* pair_style mlpot: an mlpot model file (TorchScript + JSON metadata) as a LAMMPS pair style.

   Units: metal (Å, eV, eV/Å), the model file's own units; nothing is converted.
   Domain decomposition: each rank evaluates the model on its local and ghost atoms, keeps the
   energies of its local atoms only and returns the forces on ghosts through LAMMPS's reverse
   communication (newton pair on). A model with N message-passing layers of cutoff rc needs ghost
   atoms out to N * rc (+ the neighbour skin); init_style raises the communication cutoff to that. */

#ifndef LMP_PAIR_MLPOT_H
#define LMP_PAIR_MLPOT_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMLPot : public Pair {
 public:
  PairMLPot(class LAMMPS *);
  ~PairMLPot() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  void allocate();
  void load_model();

  std::string model_path;
  torch::Device device;
  torch::jit::Module model;
  torch::Dtype dtype;
  double cutoff_A;                      // the model's neighbour cutoff, Å
  int num_layers;                       // message-passing layers: ghosts are needed out to num_layers * cutoff_A
  std::vector<std::string> species;     // element symbols in species-index order (the model's)
  std::vector<long> species_of_type;    // LAMMPS type (1..ntypes) -> species index
};

}    // namespace LAMMPS_NS

#endif
