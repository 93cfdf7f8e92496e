"""The schemas in data_specs/ accept what pirecon writes and reject broken documents."""

import json
from pathlib import Path

import jsonschema
import pytest

from pirecon.ct import ConeBeam3D, FanBeam2D, ParallelBeam2D, lpd_ellipses_geometry
import torch

from pirecon.noise import ComplexGaussianNoise, GaussianNoise, TransmissionPoisson

SPECS = Path(__file__).resolve().parents[1] / "data_specs"


def schema(name):
    return json.loads((SPECS / f"{name}.schema.json").read_text())


GEOMETRIES = [
    lpd_ellipses_geometry(),
    FanBeam2D((64, 64), num_angles=90, source_distance=200.0, detector_distance=100.0),
    ConeBeam3D((8, 16, 16), num_angles=12, detector_shape=(10, 24), detector_spacing=1.0,
               source_distance=100.0, detector_distance=50.0),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: g.kind)
def test_geometry_dicts_validate(geometry):
    jsonschema.validate(json.loads(json.dumps(geometry.to_dict())), schema("ct_geometry"))


@pytest.mark.parametrize("change", [
    {"format_version": 2},
    {"pixel_size": -1.0},
    {"image_shape": [128]},
    {"angles": []},
    {"type": "helical"},
    {"source_distance": 300.0},  # not a parallel-beam key
])
def test_broken_geometry_dicts_are_rejected(change):
    d = {**ParallelBeam2D((8, 8), num_angles=4).to_dict(), **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(d, schema("ct_geometry"))


@pytest.mark.parametrize("model", [
    GaussianNoise(relative=0.05), GaussianNoise(sigma=0.1), TransmissionPoisson(1e4),
    TransmissionPoisson(1e4, allow_photon_starvation=True), ComplexGaussianNoise(0.02),
    ComplexGaussianNoise(1.0, covariance=torch.tensor([[1.0, 0.3j], [-0.3j, 2.0]])),
])
def test_noise_dicts_validate(model):
    jsonschema.validate(model.to_dict(), schema("noise_model"))


def test_broken_noise_dicts_are_rejected():
    for d in ({"type": "gaussian", "format_version": 1},
              {"type": "gaussian", "format_version": 1, "sigma": 1.0, "relative": 0.1},
              {"type": "transmission_poisson", "format_version": 1, "photon_count": 0},
              {"type": "transmission_poisson", "format_version": 1, "photon_count": 10, "allow_photon_starvation": 1},
              {"type": "complex_gaussian", "format_version": 1},
              {"type": "complex_gaussian", "format_version": 1, "sigma": 1.0, "relative": 0.1},
              {"type": "complex_gaussian", "format_version": 1, "sigma": 1.0, "covariance": [[1.0]]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(d, schema("noise_model"))


def test_one_validator_and_no_private_name_crosses_the_data_modules():
    """validate.py checks the specs and imports nothing of pirecon.data but the shared constants (_spec.py);
    formats.py and the datasets go through it; no module takes another's private names."""
    import ast

    package = Path(__file__).resolve().parents[1] / "src" / "pirecon" / "data"
    imports = {}
    for path in sorted(package.glob("*.py")):
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .module import name
                module = node.module or ""
                found += [(module, alias.name) for alias in node.names]
        imports[path.stem] = found
    for module, names in imports.items():
        private = [f"{source}.{name}" for source, name in names if name.startswith("_")]
        assert not private, f"data/{module}.py imports private names {private}"
    assert {source for source, _ in imports["validate"]} == {"_spec"}
    assert {source for source, _ in imports["_spec"]} == set()
    assert "validate" in {source for source, _ in imports["formats"]}
    assert "validate" in {source for source, _ in imports["datasets"]}
