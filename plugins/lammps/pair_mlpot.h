/* pair_style mlpot: an mlpot model file (TorchScript + JSON metadata) as a LAMMPS pair style.

   Units: metal (Å, eV, eV/Å), the model file's own units; nothing is converted.
   Domain decomposition: each rank keeps the energies of its local atoms only and returns the forces on
   ghosts through LAMMPS's reverse communication (newton pair on). On several ranks, with a model file that
   has the layer-by-layer entry points (graph_layer), the layers run one at a time and the ghosts' node
   states come from their owners by forward communication after each layer (their gradients go back by
   reverse communication), so one cutoff of ghosts is enough and each rank computes only its own atoms.
   Otherwise a ghost that images a local atom is that atom's node and other ranks' ghosts are computed
   too, which needs ghosts out to N * rc (+ the neighbour skin) for N layers; init_style sets the
   communication cutoff. `chunk N` runs the layers N centre atoms at a time and again in the backward
   pass, so that memory grows with N instead of with the system (compute_in_chunks). */

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
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  void allocate();
  void load_model();
  void compute_images_as_nodes(int eflag, int vflag);
  void compute_layer_by_layer(int eflag, int vflag);
  void compute_in_chunks(int eflag, int vflag);
  void image_graph(std::vector<int64_t> &node_of, std::vector<int64_t> &species_of_node,
                   std::vector<int64_t> &centre_atom, std::vector<int64_t> &neighbour_atom,
                   std::vector<double> &pair_vectors, std::vector<int64_t> &centre_node,
                   std::vector<int64_t> &neighbour_node);
  void collect_edges(int n_listed, const std::vector<int64_t> *node_of, std::vector<int64_t> &centre_atom,
                     std::vector<int64_t> &neighbour_atom, std::vector<double> &pair_vectors);
  void add_local_energies(const double *energy_of, int nlocal);
  void add_edge_forces(const std::vector<int64_t> &centre_atom, const std::vector<int64_t> &neighbour_atom,
                       const std::vector<double> &pair_vectors, const double *gradient);
  torch::Tensor index_tensor(const std::vector<int64_t> &indices) const;
  torch::Tensor edge_tensor(const std::vector<int64_t> &centre, const std::vector<int64_t> &neighbour) const;
  torch::Tensor pair_vector_tensor(const std::vector<double> &pair_vectors) const;
  torch::Tensor exchanged_ghost_rows(const torch::Tensor &local_rows, int nall);
  torch::Tensor summed_onto_owners(const torch::Tensor &ghost_rows, int nlocal, int nall);

  std::string model_path;
  torch::Device device;
  torch::jit::Module model;
  torch::Dtype dtype;
  double cutoff_A;                      // the model's neighbour cutoff, Å
  int num_layers;                       // message-passing layers: ghosts are needed out to num_layers * cutoff_A
  std::vector<std::string> species;     // element symbols in species-index order (the model's)
  std::vector<long> species_of_type;    // LAMMPS type (1..ntypes) -> species index
  bool layered;                         // several ranks and a model with graph_layer: exchange node states per layer
  std::vector<int64_t> state_widths;    // columns of the node state before the first layer and after each
  std::vector<double> comm_rows;        // node-state rows (nall x comm_width) exchanged by forward/reverse comm
  int comm_width;
  int64_t chunk_atoms;                  // `chunk N`: at most N centre atoms' layer graph in memory (0: no chunking,
                                        // -1 until settings() picks the default)
  static constexpr int64_t DEFAULT_CHUNK_ATOMS = 4096;
};

}    // namespace LAMMPS_NS

#endif
