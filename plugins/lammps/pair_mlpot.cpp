/* pair_style mlpot: see pair_mlpot.h and docs/lammps.md.

   Where the physics happens: compute() builds the model's graph and runs its atom_energies(species, edges,
   edge vectors), sums the energies of the local atoms, and differentiates that sum by the edge vectors.

   The graph's nodes are the local atoms plus the ghost atoms that are *not* periodic images of a local atom
   (ghosts owned by another rank). A ghost that is an image of local atom l (same tag) is node l: the model
   then sees the periodic structure itself, as in ASE and OpenMM, instead of computing the image again. Its
   edges: every directed pair (i, j) closer than the cutoff, from every atom i that is a node of its own (a
   local atom, or another rank's ghost, which needs its own neighbours for message passing), to the node of j,
   with the vector r_ij = x_j - x_i of the actual atoms. An edge's gradient g = dE/dr_ij puts +g on atom i and
   -g on atom j (a ghost's force reaches its owner by LAMMPS's reverse communication) and -r_ij (x) g into the
   virial. */

#include "pair_mlpot.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "utils.h"

#include "json.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/cuda.h>

#include <malloc.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

using namespace LAMMPS_NS;

static const char *const METADATA_ENTRY = "mlpot_metadata.json";
static const double MIN_PAIR_DISTANCE_A = 0.01;    // closer than this is a broken structure (as in mlpot)

PairMLPot::PairMLPot(LAMMPS *lmp) :
    Pair(lmp), device(torch::kCPU), dtype(torch::kFloat64), cutoff_A(0.0), num_layers(0), layered(false),
    comm_width(0), chunk_atoms(-1)
{
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  single_enable = 0;
  ghostneigh = 1;                  // message passing: ghost atoms need their own neighbours
  no_virial_fdotr_compute = 1;     // the virial is summed from the pair vectors in compute()
  centroidstressflag = CENTROID_NOTAVAIL;
  // the same runtime settings as mlpot.runtime for Python: no TensorExpr fuser (it recompiles for every new
  // number of pairs), and freed per-call buffers kept in the heap instead of unmapped and faulted in again
  torch::jit::setTensorExprFuserEnabled(false);
  const char *tune = std::getenv("MLPOT_TUNE_MALLOC");
  if (!tune || std::strcmp(tune, "0") != 0) {
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
    mallopt(M_TOP_PAD, 512 * 1024 * 1024);
  }
}

PairMLPot::~PairMLPot()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMLPot::allocate()
{
  allocated = 1;
  int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  for (int i = 1; i <= n; i++)
    for (int j = i; j <= n; j++) setflag[i][j] = 0;
}

/* pair_style mlpot MODEL_FILE [device cpu|cuda] [chunk N|off]
   Without `chunk`, a model file with layer-by-layer entry points runs DEFAULT_CHUNK_ATOMS centre atoms at a time on
   the CPU (measured faster there from 12k atoms on, and memory linear in the atom count: docs/lammps.md) and as one
   graph on a GPU; an older file runs as one graph. */

void PairMLPot::settings(int narg, char **arg)
{
  const char *usage = "pair_style mlpot MODEL_FILE [device cpu|cuda] [chunk N|off]";
  if (narg < 1 || narg % 2 != 1) error->all(FLERR, "Illegal pair_style mlpot command: expected {}", usage);
  model_path = arg[0];
  chunk_atoms = -1;  // the default, unless `chunk` says otherwise
  for (int k = 1; k < narg; k += 2) {
    if (strcmp(arg[k], "device") == 0) {
      if (strcmp(arg[k + 1], "cpu") == 0) {
        device = torch::Device(torch::kCPU);
      } else if (strcmp(arg[k + 1], "cuda") == 0) {
        if (!torch::cuda::is_available())
          error->all(FLERR, "pair_style mlpot: device cuda was asked for but torch sees no CUDA device");
        int per_node = torch::cuda::device_count();
        device = torch::Device(torch::kCUDA, comm->me % per_node);
      } else {
        error->all(FLERR, "pair_style mlpot: device must be cpu or cuda, got {}", arg[k + 1]);
      }
    } else if (strcmp(arg[k], "chunk") == 0) {
      if (strcmp(arg[k + 1], "off") == 0) {
        chunk_atoms = 0;
        continue;
      }
      char *end = nullptr;
      const long value = std::strtol(arg[k + 1], &end, 10);
      if (end == arg[k + 1] || *end != '\0' || value < 1)
        error->all(FLERR, "pair_style mlpot: chunk must be a positive number of atoms or off, got {}", arg[k + 1]);
      chunk_atoms = value;
    } else {
      error->all(FLERR, "Illegal pair_style mlpot keyword {}: expected {}", arg[k], usage);
    }
  }
  load_model();
  if (chunk_atoms > 0 && state_widths.empty())
    error->all(FLERR,
               "pair_style mlpot: chunk needs a model file with layer-by-layer entry points, which {} (an older "
               "file) lacks: `mlpot rebuild` adds them",
               model_path);
  if (chunk_atoms < 0) chunk_atoms = (!state_widths.empty() && device.is_cpu()) ? DEFAULT_CHUNK_ATOMS : 0;
  if (chunk_atoms > 0 && comm->me == 0)
    utils::logmesg(lmp, "mlpot: each layer runs {} centre atoms at a time, again in the backward pass "
                        "(`chunk off` keeps the whole graph)\n", chunk_atoms);
}

void PairMLPot::load_model()
{
  torch::jit::ExtraFilesMap extra{{METADATA_ENTRY, ""}};
  try {
    model = torch::jit::load(model_path, device, extra);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style mlpot: cannot load model file {}: {}", model_path,
               std::string(e.what()).substr(0, 400));
  }
  const std::string &text = extra[METADATA_ENTRY];
  if (text.empty())
    error->all(FLERR,
               "pair_style mlpot: {} is not an mlpot model file (it has no {} entry); "
               "make one with `mlpot new-model` or mlpot.deploy.save_model",
               model_path, METADATA_ENTRY);
  try {
    auto metadata = json::parse(text);
    if (metadata.at("format").get<std::string>() != "mlpot-model")
      error->all(FLERR, "pair_style mlpot: {} is not an mlpot model file", model_path);
    const auto &units = metadata.at("units");
    if (units.at("length").get<std::string>() != "Angstrom" || units.at("energy").get<std::string>() != "eV")
      error->all(FLERR, "pair_style mlpot: {} has units {}, expected Angstrom and eV", model_path, units.dump());
    cutoff_A = metadata.at("cutoff").get<double>();
    num_layers = metadata.at("hyperparameters").at("num_layers").get<int>();
    species = metadata.at("species").get<std::vector<std::string>>();
    dtype = metadata.at("dtype").get<std::string>() == "float32" ? torch::kFloat32 : torch::kFloat64;
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style mlpot: the metadata of {} is unreadable: {}", model_path, e.what());
  }
  model.eval();
  state_widths.clear();
  if (model.find_method("graph_layer") && model.find_method("graph_state_widths")) {
    for (const auto &width : model.get_method("graph_state_widths")({}).toIntList()) state_widths.push_back(width);
  }
  if (comm->me == 0)
    utils::logmesg(lmp,
                   "mlpot: model {} ({} species, cutoff {} Å, {} message-passing layers, {}) on {}\n",
                   model_path, species.size(), cutoff_A, num_layers,
                   dtype == torch::kFloat32 ? "float32" : "float64", device.str());
}

/* pair_coeff * * ELEMENT_OF_TYPE_1 ELEMENT_OF_TYPE_2 ... */

void PairMLPot::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes)
    error->all(FLERR,
               "pair_coeff for mlpot needs * * and one element per atom type ({} types): "
               "pair_coeff * * H O",
               ntypes);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for mlpot must begin with * *");
  if (model_path.empty()) error->all(FLERR, "pair_coeff mlpot: give the model file in pair_style first");
  species_of_type.assign(ntypes + 1, -1);
  for (int type = 1; type <= ntypes; type++) {
    const std::string element = arg[1 + type];
    for (size_t k = 0; k < species.size(); k++)
      if (species[k] == element) species_of_type[type] = (long) k;
    if (species_of_type[type] < 0) {
      std::string known;
      for (const auto &s : species) known += (known.empty() ? "" : ", ") + s;
      error->all(FLERR, "pair_coeff mlpot: element {} (atom type {}) is not in model {}, which knows only {}",
                 element, type, model_path, known);
    }
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairMLPot::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR,
               "pair_style mlpot requires newton pair on: the forces on ghost atoms are returned to their "
               "owners by reverse communication");
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);

  // Ghost atoms out to num_layers * cutoff on several ranks: a local atom's energy after N layers depends on
  // atoms up to N cutoffs away (each layer passes messages one cutoff further), and another rank's atoms are
  // only seen as ghosts. On one rank every ghost is an image of a local atom (compute() uses that atom's
  // node), so one cutoff is enough. Atoms move by up to the skin between neighbour-list builds.
  layered = comm->nprocs > 1 && !state_widths.empty();
  if (layered) {
    comm_forward = comm_reverse = (int) *std::max_element(state_widths.begin(), state_widths.end());
    if (comm->me == 0)
      utils::logmesg(lmp, "mlpot: {} ranks exchange the ghosts' node states after each of the {} layers\n",
                     comm->nprocs, (int) state_widths.size() - 1);
  } else {
    comm_forward = comm_reverse = 0;
    if (comm->nprocs > 1 && comm->me == 0)
      utils::logmesg(lmp, "mlpot: {} has no layer-by-layer entry points (an older model file: `mlpot rebuild` "
                          "adds them); every rank computes the other ranks' atoms in a deep ghost shell\n",
                     model_path);
  }
  const int layers_in_shell = (comm->nprocs > 1 && !layered) ? num_layers : 1;
  const double needed = layers_in_shell * cutoff_A + neighbor->skin;
  if (comm->mode != 0)
    error->all(FLERR, "pair_style mlpot supports comm_modify mode single only");
  if (comm->cutghostuser < needed) {
    if (comm->me == 0)
      utils::logmesg(lmp,
                     "mlpot: communication cutoff raised to {:.3f} Å = {} layer(s) x {} Å cutoff + {} Å skin\n",
                     needed, layers_in_shell, cutoff_A, neighbor->skin);
    comm->cutghostuser = needed;
  }
}

double PairMLPot::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set (pair_coeff * * ELEMENTS...)");
  cutghost[i][j] = cutghost[j][i] = cutoff_A;
  return cutoff_A;
}

void PairMLPot::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (chunk_atoms > 0)
    compute_in_chunks(eflag, vflag);
  else if (layered)
    compute_layer_by_layer(eflag, vflag);
  else
    compute_images_as_nodes(eflag, vflag);
}

/* Every directed pair (i, j) closer than the cutoff, for the first n_listed atoms of the neighbour list (local
   atoms first, then ghosts with their own lists), as atom indices and vectors r_ij = x_j - x_i (Å). With node_of,
   a ghost that is the node of a local atom (its periodic image) is skipped: that atom's edges stand for it. */

void PairMLPot::collect_edges(int n_listed, const std::vector<int64_t> *node_of, std::vector<int64_t> &centre_atom,
                              std::vector<int64_t> &neighbour_atom, std::vector<double> &pair_vectors)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutoff_sq = cutoff_A * cutoff_A;
  for (int ii = 0; ii < n_listed; ii++) {
    const int i = ilist[ii];
    if (node_of && i >= nlocal && (*node_of)[i] < nlocal) continue;
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq >= cutoff_sq) continue;
      if (rsq < MIN_PAIR_DISTANCE_A * MIN_PAIR_DISTANCE_A)
        error->one(FLERR,
                   "mlpot: atoms {} and {} are {:.4g} Å apart (closer than {} Å): the structure is broken, "
                   "e.g. an atom listed twice or a collapsed simulation",
                   atom->tag[i], atom->tag[j], std::sqrt(rsq), MIN_PAIR_DISTANCE_A);
      centre_atom.push_back(i);
      neighbour_atom.push_back(j);
      pair_vectors.push_back(dx);
      pair_vectors.push_back(dy);
      pair_vectors.push_back(dz);
    }
  }
}

/* The local atoms' energies (eV) into the total and the per-atom energies, as LAMMPS asked for them. */

void PairMLPot::add_local_energies(const double *energy_of, int nlocal)
{
  if (!eflag_either) return;
  for (int i = 0; i < nlocal; i++) {
    if (eflag_global) eng_vdwl += energy_of[i];
    if (eflag_atom) eatom[i] += energy_of[i];
  }
}

/* Forces, virial and energies from the edges' gradients (see the top of this file). */

void PairMLPot::add_edge_forces(const std::vector<int64_t> &centre_atom, const std::vector<int64_t> &neighbour_atom,
                                const std::vector<double> &pair_vectors, const double *g)
{
  double **f = atom->f;
  const int64_t n_pairs = (int64_t) centre_atom.size();
  for (int64_t p = 0; p < n_pairs; p++) {
    const int64_t i = centre_atom[p], j = neighbour_atom[p];
    const double *gp = g + 3 * p;
    for (int k = 0; k < 3; k++) {
      f[i][k] += gp[k];
      f[j][k] -= gp[k];
    }
    if (vflag_either) {
      const double *r = pair_vectors.data() + 3 * p;
      const double w[6] = {-r[0] * gp[0], -r[1] * gp[1], -r[2] * gp[2],
                           -r[0] * gp[1], -r[0] * gp[2], -r[1] * gp[2]};
      if (vflag_global)
        for (int k = 0; k < 6; k++) virial[k] += w[k];
      if (vflag_atom)
        for (int k = 0; k < 6; k++) {
          vatom[i][k] += 0.5 * w[k];
          vatom[j][k] += 0.5 * w[k];
        }
    }
  }
}

/* Host lists as tensors on the model's device: node indices (long), the edge index (2 x n_pairs: centres, then
   neighbours) and the pair vectors (n_pairs x 3, Å, the model's dtype), each a copy the lists can outlive. */

torch::Tensor PairMLPot::index_tensor(const std::vector<int64_t> &indices) const
{
  return torch::tensor(indices, torch::kLong).to(device);
}

torch::Tensor PairMLPot::edge_tensor(const std::vector<int64_t> &centre, const std::vector<int64_t> &neighbour) const
{
  return torch::stack({index_tensor(centre), index_tensor(neighbour)});
}

torch::Tensor PairMLPot::pair_vector_tensor(const std::vector<double> &pair_vectors) const
{
  return torch::tensor(pair_vectors, torch::kFloat64).view({-1, 3}).to(device, dtype);
}

/* The ghosts' rows of a node state: the local rows (nlocal x width) sent to the ranks and images that hold
   them as ghosts (forward communication); returned as a new leaf (nghost x width) on the model's device. */

torch::Tensor PairMLPot::exchanged_ghost_rows(const torch::Tensor &local_rows, int nall)
{
  const int nlocal = atom->nlocal;
  comm_width = (int) local_rows.size(1);
  comm_rows.assign((size_t) nall * comm_width, 0.0);
  torch::Tensor rows = local_rows.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  std::memcpy(comm_rows.data(), rows.data_ptr<double>(), sizeof(double) * (size_t) nlocal * comm_width);
  comm->forward_comm(this);
  const auto doubles = torch::TensorOptions().dtype(torch::kFloat64);
  return torch::from_blob(comm_rows.data() + (size_t) nlocal * comm_width, {nall - nlocal, comm_width}, doubles)
      .to(device, dtype)
      .clone()
      .requires_grad_(true);
}

/* The ghosts' gradient rows (nghost x width) added onto the rows of the atoms they copy (reverse
   communication); returned as (nlocal x width) on the model's device. */

torch::Tensor PairMLPot::summed_onto_owners(const torch::Tensor &ghost_rows, int nlocal, int nall)
{
  comm_width = (int) ghost_rows.size(1);
  comm_rows.assign((size_t) nall * comm_width, 0.0);
  torch::Tensor rows = ghost_rows.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  std::memcpy(comm_rows.data() + (size_t) nlocal * comm_width, rows.data_ptr<double>(),
              sizeof(double) * (size_t) (nall - nlocal) * comm_width);
  comm->reverse_comm(this);
  const auto doubles = torch::TensorOptions().dtype(torch::kFloat64);
  return torch::from_blob(comm_rows.data(), {nlocal, comm_width}, doubles).to(device, dtype).clone();
}

int PairMLPot::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  int m = 0;
  for (int k = 0; k < n; k++) {
    const double *row = comm_rows.data() + (size_t) list[k] * comm_width;
    for (int c = 0; c < comm_width; c++) buf[m++] = row[c];
  }
  return m;
}

void PairMLPot::unpack_forward_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int k = first; k < first + n; k++) {
    double *row = comm_rows.data() + (size_t) k * comm_width;
    for (int c = 0; c < comm_width; c++) row[c] = buf[m++];
  }
}

int PairMLPot::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int k = first; k < first + n; k++) {
    const double *row = comm_rows.data() + (size_t) k * comm_width;
    for (int c = 0; c < comm_width; c++) buf[m++] = row[c];
  }
  return m;
}

void PairMLPot::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int k = 0; k < n; k++) {
    double *row = comm_rows.data() + (size_t) list[k] * comm_width;
    for (int c = 0; c < comm_width; c++) row[c] += buf[m++];
  }
}

/* Several ranks: the layers one at a time, the ghosts' node states from their owners in between. Nodes are all
   atoms, local and ghost; edges only from local atoms (a ghost's state is its owner's, computed there). Backward,
   layer by layer: the gradient of the energy with respect to a layer's ghost rows goes back to their owners and
   joins the gradient of the owners' rows before it flows into the layer below. */

void PairMLPot::compute_layer_by_layer(int /*eflag*/, int /*vflag*/)
{
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  std::vector<int64_t> centre_atom, neighbour_atom;
  std::vector<double> pair_vectors;
  collect_edges(list->inum, nullptr, centre_atom, neighbour_atom, pair_vectors);
  std::vector<int64_t> species_of_atom(nall);
  for (int a = 0; a < nall; a++) species_of_atom[a] = species_of_type[type[a]];

  torch::Tensor species_t = index_tensor(species_of_atom);
  torch::Tensor local_species = species_t.narrow(0, 0, nlocal);
  torch::Tensor edge_index = edge_tensor(centre_atom, neighbour_atom);
  torch::Tensor vectors = pair_vector_tensor(pair_vectors).requires_grad_(true);

  // Each layer's graph starts from leaves (its input state: local rows, ghost rows), so that differentiating one
  // layer gives only that layer's own dependence on the edge vectors.
  const int n_layers = (int) state_widths.size() - 1;
  std::vector<torch::Tensor> local_in, ghost_in, local_out;    // per layer: input leaves, output local rows
  torch::Tensor energies, vector_gradient;
  try {
    auto layer = model.get_method("graph_layer");
    torch::Tensor first = layer({-1, torch::zeros({0}), species_t, edge_index, vectors}).toTensor().detach();
    torch::Tensor local = first.narrow(0, 0, nlocal).clone().requires_grad_(true);
    torch::Tensor ghost = first.narrow(0, nlocal, nall - nlocal).clone().requires_grad_(true);
    for (int k = 0; k < n_layers; k++) {
      local_in.push_back(local);
      ghost_in.push_back(ghost);
      torch::Tensor out = layer({k, torch::cat({local, ghost}), species_t, edge_index, vectors}).toTensor();
      local_out.push_back(out.narrow(0, 0, nlocal));
      local = local_out.back().detach().clone().requires_grad_(true);
      ghost = exchanged_ghost_rows(local_out.back(), nall);
    }
    energies = model.get_method("graph_energies")({local, local_species}).toTensor();
    torch::Tensor upstream = torch::autograd::grad({energies.sum()}, {local}, {}, false, false, true)[0];
    vector_gradient = torch::zeros_like(vectors);
    for (int k = n_layers - 1; k >= 0; k--) {
      if (!upstream.defined()) upstream = torch::zeros_like(local_out[k]);
      auto grads = torch::autograd::grad({local_out[k]}, {vectors, local_in[k], ghost_in[k]}, {upstream}, false,
                                         false, true);
      if (grads[0].defined()) vector_gradient = vector_gradient + grads[0];
      if (k == 0) break;    // the first state depends on the species alone
      torch::Tensor from_ghosts = grads[2].defined() ? summed_onto_owners(grads[2], nlocal, nall)
                                                     : torch::zeros_like(local_in[k]);
      upstream = grads[1].defined() ? grads[1] + from_ghosts : from_ghosts;
    }
  } catch (const std::exception &e) {
    error->one(FLERR, "mlpot: the model failed: {}", std::string(e.what()).substr(0, 600));
  }
  torch::Tensor energies_cpu = energies.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  torch::Tensor gradient_cpu = vector_gradient.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  add_edge_forces(centre_atom, neighbour_atom, pair_vectors, gradient_cpu.data_ptr<double>());
  add_local_energies(energies_cpu.data_ptr<double>(), nlocal);
}

/* One rank, or a model file without graph_layer: images of local atoms are those atoms' nodes (top of file). */

void PairMLPot::compute_images_as_nodes(int /*eflag*/, int /*vflag*/)
{
  const int nlocal = atom->nlocal;

  std::vector<int64_t> node_of, species_of_node, centre_atom, neighbour_atom, centre_node, neighbour_node;
  std::vector<double> pair_vectors;
  image_graph(node_of, species_of_node, centre_atom, neighbour_atom, pair_vectors, centre_node, neighbour_node);
  torch::Tensor species_t = index_tensor(species_of_node);
  torch::Tensor edge_index = edge_tensor(centre_node, neighbour_node);
  torch::Tensor vectors = pair_vector_tensor(pair_vectors).requires_grad_(true);

  torch::Tensor energies, gradient;
  try {
    energies = model.get_method("atom_energies")({species_t, edge_index, vectors}).toTensor();
    torch::Tensor local_energy = energies.narrow(0, 0, nlocal).sum();
    auto gradients = torch::autograd::grad({local_energy}, {vectors}, {}, false, false, true);
    gradient = gradients[0].defined() ? gradients[0] : torch::zeros_like(vectors);
  } catch (const std::exception &e) {
    error->one(FLERR, "mlpot: the model failed: {}", std::string(e.what()).substr(0, 600));
  }
  torch::Tensor energies_cpu = energies.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  torch::Tensor gradient_cpu = gradient.to(torch::kCPU, torch::kFloat64).contiguous();
  const double *energy_of = energies_cpu.data_ptr<double>();
  const double *g = gradient_cpu.data_ptr<double>();

  add_edge_forces(centre_atom, neighbour_atom, pair_vectors, g);
  add_local_energies(energy_of, nlocal);
}

/* The graph of compute_images_as_nodes: the node of every atom (local atoms are nodes 0..nlocal-1; a ghost is the
   node of the local atom it images, or a node of its own, another rank's atom, numbered from nlocal), each node's
   species, and the directed edges from every atom that is a node of its own to all its neighbours closer than the
   cutoff, as atoms and as nodes. */

void PairMLPot::image_graph(std::vector<int64_t> &node_of, std::vector<int64_t> &species_of_node,
                            std::vector<int64_t> &centre_atom, std::vector<int64_t> &neighbour_atom,
                            std::vector<double> &pair_vectors, std::vector<int64_t> &centre_node,
                            std::vector<int64_t> &neighbour_node)
{
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const tagint *tag = atom->tag;
  std::unordered_map<tagint, int> local_of_tag;
  local_of_tag.reserve(2 * (size_t) nlocal);
  for (int i = 0; i < nlocal; i++) local_of_tag.emplace(tag[i], i);
  node_of.assign(nall, 0);
  species_of_node.clear();
  species_of_node.reserve(nall);
  for (int i = 0; i < nlocal; i++) {
    node_of[i] = i;
    species_of_node.push_back(species_of_type[type[i]]);
  }
  for (int a = nlocal; a < nall; a++) {
    const auto owner = local_of_tag.find(tag[a]);
    if (owner != local_of_tag.end()) {
      node_of[a] = owner->second;
    } else {
      node_of[a] = (int64_t) species_of_node.size();
      species_of_node.push_back(species_of_type[type[a]]);
    }
  }
  collect_edges(list->inum + list->gnum, &node_of, centre_atom, neighbour_atom, pair_vectors);
  centre_node.resize(centre_atom.size());
  neighbour_node.resize(neighbour_atom.size());
  for (size_t p = 0; p < centre_atom.size(); p++) {
    centre_node[p] = node_of[centre_atom[p]];
    neighbour_node[p] = node_of[neighbour_atom[p]];
  }
}

/* `chunk N`: the layers one at a time as in compute_layer_by_layer (on one rank on the graph of
   compute_images_as_nodes, on several with the ghosts' states exchanged), with memory bounded by N centre atoms.

   Forward, without autograd, N owned nodes at a time: a chunk's layer runs on its subgraph (its centres, their
   neighbours, the centres' edges), which gives the centres' new states exactly; only the node states between
   layers are kept. Backward, layer by layer from the top: each chunk's layer is run again with autograd and
   differentiated at once, so one chunk's graph is alive at a time. The price is a second forward pass: memory
   grows with N (and the node states), not with the system. */

void PairMLPot::compute_in_chunks(int /*eflag*/, int /*vflag*/)
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int *type = atom->type;
  const bool exchange = layered;

  // the graph: on several ranks every atom is a node and only local atoms are centres; on one rank, images as nodes
  std::vector<int64_t> node_of, species_of_node, centre_atom, neighbour_atom, centre_node, neighbour_node;
  std::vector<double> pair_vectors;
  int64_t n_owned;
  if (exchange) {
    collect_edges(list->inum, nullptr, centre_atom, neighbour_atom, pair_vectors);
    centre_node = centre_atom;
    neighbour_node = neighbour_atom;
    species_of_node.resize(nall);
    for (int a = 0; a < nall; a++) species_of_node[a] = species_of_type[type[a]];
    n_owned = nlocal;
  } else {
    image_graph(node_of, species_of_node, centre_atom, neighbour_atom, pair_vectors, centre_node, neighbour_node);
    n_owned = (int64_t) species_of_node.size();
    if (n_owned != nlocal)
      error->one(FLERR, "mlpot: chunk on one rank found ghost atoms that image no local atom");
  }
  const int64_t n_nodes = (int64_t) species_of_node.size();
  const int64_t n_pairs = (int64_t) centre_node.size();

  // the edges in order of their centre (collect_edges lists them so; sort if a neighbour list did not)
  if (!std::is_sorted(centre_node.begin(), centre_node.end())) {
    std::vector<int64_t> order(n_pairs);
    for (int64_t p = 0; p < n_pairs; p++) order[p] = p;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return centre_node[a] < centre_node[b]; });
    auto permuted = [&](const std::vector<int64_t> &v) {
      std::vector<int64_t> out(n_pairs);
      for (int64_t p = 0; p < n_pairs; p++) out[p] = v[order[p]];
      return out;
    };
    centre_node = permuted(centre_node);
    neighbour_node = permuted(neighbour_node);
    centre_atom = permuted(centre_atom);
    neighbour_atom = permuted(neighbour_atom);
    std::vector<double> vectors_sorted(3 * n_pairs);
    for (int64_t p = 0; p < n_pairs; p++)
      for (int k = 0; k < 3; k++) vectors_sorted[3 * p + k] = pair_vectors[3 * order[p] + k];
    pair_vectors.swap(vectors_sorted);
  }

  // the chunks: owned nodes [first, first + count), their edges [edge_first, edge_end), and the subgraph's nodes
  // (the centres first, then their other neighbours) with the edges renumbered into it
  struct Chunk {
    int64_t first, count, edge_first, edge_end;
    torch::Tensor nodes, edge_index, species;
  };
  torch::Tensor species_t = index_tensor(species_of_node);
  std::vector<Chunk> chunks;
  std::vector<int64_t> subnode_of(n_nodes, -1);
  int64_t edge = 0;
  for (int64_t first = 0; first < n_owned; first += chunk_atoms) {
    const int64_t count = std::min<int64_t>(chunk_atoms, n_owned - first);
    std::vector<int64_t> nodes;
    for (int64_t c = 0; c < count; c++) {
      subnode_of[first + c] = c;
      nodes.push_back(first + c);
    }
    const int64_t edge_first = edge;
    std::vector<int64_t> sub_centre, sub_neighbour;
    while (edge < n_pairs && centre_node[edge] < first + count) {
      const int64_t j = neighbour_node[edge];
      if (subnode_of[j] < 0) {
        subnode_of[j] = (int64_t) nodes.size();
        nodes.push_back(j);
      }
      sub_centre.push_back(centre_node[edge] - first);
      sub_neighbour.push_back(subnode_of[j]);
      edge++;
    }
    for (const int64_t node : nodes) subnode_of[node] = -1;
    Chunk chunk{first, count, edge_first, edge, torch::Tensor(), torch::Tensor(), torch::Tensor()};
    chunk.nodes = index_tensor(nodes);
    chunk.edge_index = edge_tensor(sub_centre, sub_neighbour);
    chunk.species = species_t.index_select(0, chunk.nodes);
    chunks.push_back(chunk);
  }
  torch::Tensor vectors = pair_vector_tensor(pair_vectors);

  const int n_layers = (int) state_widths.size() - 1;
  std::vector<torch::Tensor> state_in;    // per layer: the state of every node before it (no autograd)
  torch::Tensor energies, vector_gradient;
  try {
    auto layer = model.get_method("graph_layer");
    torch::Tensor state;
    {
      torch::NoGradGuard no_grad;
      state = layer({-1, torch::zeros({0}), species_t, torch::zeros({2, 0}, species_t.options()),
                     torch::zeros({0, 3}, vectors.options())})
                  .toTensor();
      for (int k = 0; k < n_layers; k++) {
        state_in.push_back(state);
        torch::Tensor owned = torch::empty({n_owned, state_widths[k + 1]}, state.options());
        for (const Chunk &chunk : chunks) {
          torch::Tensor out = layer({k, state.index_select(0, chunk.nodes), chunk.species, chunk.edge_index,
                                     vectors.slice(0, chunk.edge_first, chunk.edge_end)})
                                  .toTensor();
          owned.narrow(0, chunk.first, chunk.count).copy_(out.narrow(0, 0, chunk.count));
        }
        state = exchange ? torch::cat({owned, exchanged_ghost_rows(owned, nall).detach()}) : owned;
      }
    }
    torch::Tensor last = state.narrow(0, 0, n_owned).detach().requires_grad_(true);
    energies = model.get_method("graph_energies")({last, species_t.narrow(0, 0, n_owned)}).toTensor();
    torch::Tensor upstream = torch::autograd::grad({energies.sum()}, {last}, {}, false, false, true)[0];
    if (!upstream.defined()) upstream = torch::zeros_like(last);
    vector_gradient = torch::zeros_like(vectors);
    for (int k = n_layers - 1; k >= 0; k--) {
      torch::Tensor state_gradient = torch::zeros_like(state_in[k]);
      for (const Chunk &chunk : chunks) {
        torch::Tensor sub_state = state_in[k].index_select(0, chunk.nodes).requires_grad_(true);
        torch::Tensor sub_vectors = vectors.slice(0, chunk.edge_first, chunk.edge_end).detach().requires_grad_(true);
        torch::Tensor out = layer({k, sub_state, chunk.species, chunk.edge_index, sub_vectors}).toTensor();
        auto grads = torch::autograd::grad({out.narrow(0, 0, chunk.count)}, {sub_vectors, sub_state},
                                           {upstream.narrow(0, chunk.first, chunk.count)}, false, false, true);
        if (grads[0].defined()) vector_gradient.slice(0, chunk.edge_first, chunk.edge_end).add_(grads[0]);
        if (k > 0 && grads[1].defined()) state_gradient.index_add_(0, chunk.nodes, grads[1]);
      }
      if (k == 0) break;    // the first state depends on the species alone
      upstream = state_gradient.narrow(0, 0, n_owned);
      if (exchange) upstream = upstream + summed_onto_owners(state_gradient.narrow(0, n_owned, nall - n_owned), nlocal, nall);
    }
  } catch (const std::exception &e) {
    error->one(FLERR, "mlpot: the model failed: {}", std::string(e.what()).substr(0, 600));
  }
  torch::Tensor energies_cpu = energies.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  torch::Tensor gradient_cpu = vector_gradient.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  add_edge_forces(centre_atom, neighbour_atom, pair_vectors, gradient_cpu.data_ptr<double>());
  add_local_energies(energies_cpu.data_ptr<double>(), nlocal);
}
