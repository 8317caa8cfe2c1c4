"""Model files are sealed whole: any edit of their code, weights or metadata is refused; format-1 files still load."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import as_tensors
from mlpot.cli import main
from mlpot.deploy import (
    FORMAT_VERSION,
    METADATA_ENTRY,
    SEAL_ENTRY,
    ModelFileError,
    UnsealedModelWarning,
    load_model,
    read_metadata,
)


def _rewrite(source: Path, target: Path, edit) -> Path:
    """Copy the archive entry by entry, letting ``edit(name, data) -> data`` change any entry."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            new.writestr(item, edit(item.filename, old.read(item.filename)))
    return target


def _edit_metadata(change):
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/extra/" + METADATA_ENTRY):
            metadata = json.loads(data)
            change(metadata)
            return json.dumps(metadata).encode()
        return data
    return edit


def _scale_code(name: str, data: bytes) -> bytes:
    """Edit the model's TorchScript code: the per-atom energies of ``forward`` times 3 (a valid program)."""
    if "/code/" in name and name.endswith(".py") and b"def forward" in data:
        return data.replace(b"return ", b"return 3.0 * ", 1)
    return data


def test_a_saved_model_file_is_sealed_and_loads(model_files):
    metadata = read_metadata(model_files[("egnn", "float64")])
    assert metadata["format_version"] == FORMAT_VERSION == 2
    assert len(metadata["seal"]) == 64
    load_model(model_files[("egnn", "float64")])


@pytest.mark.parametrize("what, change", [
    ("cutoff", lambda m: m.update(cutoff=9.0)),
    ("species", lambda m: m.update(species=m["species"][::-1])),
    ("energy shift", lambda m: m["energy_shift"].__setitem__(0, m["energy_shift"][0] + 1.0)),
    ("provenance", lambda m: m.update(provenance={"trained": True})),
])
def test_edited_metadata_is_refused(model_files, tmp_path, what, change):
    edited = _rewrite(model_files[("nequip", "float64")], tmp_path / "edited.pt", _edit_metadata(change))
    with pytest.raises(ModelFileError, match="has been modified since it was saved: its seal does not match"):
        read_metadata(edited)
    with pytest.raises(ModelFileError, match="seal does not match"):
        load_model(edited)


def test_edited_code_is_refused(model_files, tmp_path, alanine_dipeptide):
    source = model_files[("egnn", "float64")]
    edited = _rewrite(source, tmp_path / "edited.pt", _scale_code)
    assert zipfile.ZipFile(edited).read  # the edit is a working program: TorchScript loads it ...
    assert any(_scale_code(n, zipfile.ZipFile(source).read(n)) != zipfile.ZipFile(source).read(n)
               for n in zipfile.ZipFile(source).namelist())
    with pytest.raises(ModelFileError, match="seal does not match"):  # ... but mlpot does not
        load_model(edited)


def test_edited_weights_are_refused(model_files, tmp_path):
    def flip_a_byte(name: str, data: bytes) -> bytes:
        if "/data/" in name and len(data) >= 8:
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    edited = _rewrite(model_files[("nequip", "float32")], tmp_path / "edited.pt", flip_a_byte)
    with pytest.raises(ModelFileError, match="seal does not match"):
        load_model(edited)


def test_a_downgrade_to_format_1_is_refused(model_files, tmp_path):
    edited = _rewrite(model_files[("egnn", "float32")], tmp_path / "old.pt",
                      _edit_metadata(lambda m: m.update(format_version=1)))
    with pytest.raises(ModelFileError, match="claims model-file format 1 but carries a seal"):
        read_metadata(edited)


def test_a_format_2_file_without_its_seal_is_refused(model_files, tmp_path):
    source = model_files[("egnn", "float32")]
    target = tmp_path / "unsealed.pt"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            if not item.filename.endswith("/extra/" + SEAL_ENTRY):
                new.writestr(item, old.read(item.filename))
    with pytest.raises(ModelFileError, match="has no seal"):
        read_metadata(target)


def _format_1_copy(source: Path, target: Path) -> Path:
    """The file as mlpot wrote it before the seal: format 1, no seal entry."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename.endswith("/extra/" + SEAL_ENTRY):
                continue
            if item.filename.endswith("/extra/" + METADATA_ENTRY):
                metadata = json.loads(data)
                metadata["format_version"] = 1
                data = json.dumps(metadata).encode()
            new.writestr(item, data)
    return target


def test_a_format_1_file_loads_with_a_warning_and_rebuild_seals_it(model_files, tmp_path, capsys, water_box):
    old = _format_1_copy(model_files[("egnn", "float64")], tmp_path / "format1.pt")
    with pytest.warns(UnsealedModelWarning, match="cannot be verified"):
        deployed = load_model(old)
    assert main(["info", str(old)]) == 0
    assert "seal           none: a format-1 file" in capsys.readouterr().out
    sealed = tmp_path / "sealed.pt"
    assert main(["rebuild", str(old), "-o", str(sealed)]) == 0
    assert "no change (sealed)" in capsys.readouterr().out
    assert read_metadata(sealed)["format_version"] == 2
    assert main(["info", str(sealed)]) == 0
    assert "seal           intact" in capsys.readouterr().out
    inputs = as_tensors(water_box[:48])
    before, after = deployed.compute(*inputs), load_model(sealed).compute(*inputs)
    assert torch.allclose(before["forces"], after["forces"], rtol=0, atol=1e-12)


def test_info_refuses_a_modified_file_in_one_line(model_files, tmp_path, capsys):
    edited = _rewrite(model_files[("nequip", "float64")], tmp_path / "edited.pt",
                      _edit_metadata(lambda m: m.update(cutoff=9.0)))
    assert main(["info", str(edited)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has been modified since it was saved" in err


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_rebuild_works_on_a_model_that_has_run(model_files, tmp_path, arch, alanine_dipeptide, capsys):
    """An inference copy that has run holds matrices built from its weights (``*_cache``); rebuilding skips them."""
    source = model_files[(arch, "float64")]
    load_model(source).compute(*as_tensors(alanine_dipeptide))  # fills the caches of the loaded copy
    from mlpot.deploy import rebuild_model

    deployed = load_model(source)
    deployed.compute(*as_tensors(alanine_dipeptide))
    model, _ = rebuild_model(deployed)
    assert set(model.state_dict()) <= set(deployed.module.state_dict())


@pytest.mark.parametrize("arch", ["egnn", "nequip"])
def test_stable_parent_loads_from_a_model_file_of_either_architecture(model_files, arch, alanine_dipeptide):
    from mlpot.stable.parent import load_parent

    source = model_files[(arch, "float64")]
    load_model(source).compute(*as_tensors(alanine_dipeptide))
    parent = load_parent(source)
    expected = load_model(source).compute(*as_tensors(alanine_dipeptide))["energy"]
    positions, numbers, cell, pbc = as_tensors(alanine_dipeptide)
    energy = parent.model.compute(positions, numbers, cell, pbc, True, False, False)["energy"]
    assert torch.allclose(energy, expected, rtol=1e-10, atol=1e-10)
