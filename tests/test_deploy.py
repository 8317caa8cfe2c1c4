"""The model-file format: round trip, metadata, and clear refusals of bad files."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from conftest import SPECIES, as_tensors, small_description
from mlpot.deploy import (
    FORMAT_VERSION,
    METADATA_ENTRY,
    SEAL_ENTRY,
    ModelFileError,
    compile_model,
    load_model,
    read_metadata,
)
from mlpot.models import build_model, describe, for_inference


def _rewrite_metadata(source, target, change, keep_seal=True):
    """Copy a model file, passing its metadata through ``change`` (``keep_seal=False``: without its seal)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            if not keep_seal and item.filename.endswith(SEAL_ENTRY):
                continue
            data = original.read(item.filename)
            if item.filename.endswith(METADATA_ENTRY):
                metadata = json.loads(data)
                change(metadata)
                data = json.dumps(metadata).encode()
            copy.writestr(item, data)


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_loaded_model_reproduces_eager_energy_and_forces(arch, eager_models, model_files, alanine_dipeptide):
    deployed = load_model(model_files[(arch, "float64")])
    inputs = as_tensors(alanine_dipeptide)
    loaded = deployed.module.compute(*inputs, True, False, False)
    eager = eager_models[(arch, "float64")].compute(*inputs, True, False, False)
    assert float(loaded["energy"]) == pytest.approx(float(eager["energy"]), rel=1e-12)
    assert torch.allclose(loaded["forces"], eager["forces"], rtol=0, atol=1e-10)


def test_inference_copy_computes_what_the_model_does_and_leaves_the_model_trainable(dilute_water_box):
    # lmax 1: every fast module (folded radial network with the convolution's constants, dense linear maps)
    hyperparameters = {"num_features": 8, "lmax": 1, "parity": True, "num_layers": 2, "radial_width": 16,
                       "radial_depth": 1, "prune_irreps": True}
    model = build_model(describe("nequip", SPECIES, 5.0, dtype="float64", hyperparameters=hyperparameters,
                                 energy_scale=0.5), seed=2)
    copy = for_inference(model)
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert not any(parameter.requires_grad for parameter in copy.parameters())
    compiled = compile_model(copy)
    inputs = as_tensors(dilute_water_box)
    eager = model.compute(*inputs, True, True, False)
    for _ in range(2):  # the first call builds the weight-derived matrices, the second reuses them
        loaded = compiled.compute(*inputs, True, True, False)
        for key in ("energies", "forces", "stress"):
            torch.testing.assert_close(loaded[key], eager[key], rtol=1e-10, atol=1e-12)
    layer = compiled.representation.layers[0]
    assert len(layer.folded_radial_mlp.matrix_cache) == 2 and layer.linear_up_matrix.matrix_cache.numel() > 0
    # the reused matrices follow the weights to another dtype
    single = compiled.float().compute(*as_tensors(dilute_water_box, torch.float32), True, False, False)
    torch.testing.assert_close(single["forces"].double(), eager["forces"], rtol=1e-4, atol=1e-5)


def test_metadata_describes_the_model_completely(model_files):
    metadata = read_metadata(model_files[("nequip", "float32")])
    description = small_description("nequip", "float32")
    assert metadata["format"] == "mlpot-model" and metadata["format_version"] == FORMAT_VERSION
    assert metadata["species"] == ["H", "C", "N", "O"] and metadata["atomic_numbers"] == [1, 6, 7, 8]
    assert metadata["cutoff"] == 5.0 and metadata["dtype"] == "float32"
    assert metadata["units"] == {"length": "Angstrom", "energy": "eV"}
    assert metadata["hyperparameters"] == description["hyperparameters"]
    assert metadata["energy_shift"] == pytest.approx(description["energy_shift"])
    assert {"mlpot", "torch", "e3nn", "vesin-torch"} <= set(metadata["versions"])
    assert len(metadata["content_hash"]) == 64 and metadata["created"].endswith("+00:00")


def test_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_truncated_file_is_refused_as_corrupt(model_files, tmp_path):
    data = model_files[("egnn", "float32")].read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(truncated)


def test_garbage_file_is_refused_as_corrupt(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model at all" * 100)
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(garbage)


def test_pickled_torch_save_file_is_refused_as_not_an_mlpot_model(eager_models, tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save(eager_models[("egnn", "float32")].state_dict(), pickled)
    with pytest.raises(ModelFileError, match="not an mlpot model file"):
        load_model(pickled)


def test_file_from_a_newer_format_version_asks_to_upgrade(model_files, tmp_path):
    newer = tmp_path / "newer.pt"
    _rewrite_metadata(model_files[("egnn", "float32")], newer, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="upgrade mlpot"):
        load_model(newer)


def test_parameters_that_do_not_match_the_recorded_hash_are_refused(model_files, tmp_path):
    tampered = tmp_path / "tampered.pt"
    # a format-1 file (no seal) still has its weights checked against the content hash
    _rewrite_metadata(model_files[("egnn", "float32")], tampered,
                      lambda m: m.update(content_hash="0" * 64, format_version=1), keep_seal=False)
    with pytest.warns(UserWarning, match="without a seal"), pytest.raises(ModelFileError,
                                                                           match="do not match the content hash"):
        load_model(tampered)


def test_metadata_missing_required_keys_is_refused(model_files, tmp_path):
    broken = tmp_path / "broken.pt"
    _rewrite_metadata(model_files[("egnn", "float32")], broken, lambda m: m.pop("cutoff"))
    with pytest.raises(ModelFileError, match="lacks required keys.*cutoff"):
        load_model(broken)


def test_saving_never_leaves_a_partial_file(model_files):
    folder = model_files[("egnn", "float32")].parent
    assert not list(folder.glob("*.partial"))
