import json
import math
import re

import astra
import numpy as np
import odl
import pytest
from odl.applications import tomo

from pirecon.ct import ConeBeam3D, FanBeam2D, ParallelBeam2D, geometry_from_dict, lpd_ellipses_geometry

GEOMETRIES = [
    ParallelBeam2D((32, 48), pixel_size=0.5, num_angles=20),
    ParallelBeam2D((16, 16), angles=[0.1, 0.5, 2.0], num_detectors=30, detector_spacing=0.7),
    FanBeam2D((40, 40), pixel_size=2.0, num_angles=36, source_distance=300.0, detector_distance=150.0),
    ConeBeam3D((8, 16, 16), voxel_size=0.5, num_angles=12, detector_shape=(10, 24),
               detector_spacing=(0.8, 0.9), source_distance=100.0, detector_distance=50.0),
]


def test_lpd_ellipses_geometry_equals_odl_default():
    ours = lpd_ellipses_geometry()
    space = odl.uniform_discr([-64, -64], [64, 64], (128, 128))
    ref = tomo.parallel_beam_geometry(space, num_angles=30)
    assert ours.image_shape == (128, 128) and ours.pixel_size == 1.0
    assert ours.num_detectors == 183 == ref.det_partition.shape[0]
    np.testing.assert_allclose(ours.angles, ref.angles, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.detector_spacing, ref.det_partition.cell_sides[0], rtol=1e-12)
    assert ours.sinogram_shape == (30, 183)


@pytest.mark.parametrize("shape, pixel_size", [((256, 256), 1.0), ((100, 60), 0.25)])
def test_parallel_default_detector_follows_odls_nyquist_rule(shape, pixel_size):
    g = ParallelBeam2D(shape, pixel_size=pixel_size, num_angles=360)
    h, w = shape[0] * pixel_size, shape[1] * pixel_size
    space = odl.uniform_discr([-w / 2, -h / 2], [w / 2, h / 2], shape[::-1])
    ref = tomo.parallel_beam_geometry(space, num_angles=360)
    assert g.num_detectors == ref.det_partition.shape[0]
    np.testing.assert_allclose(g.num_detectors * g.detector_spacing, math.hypot(h, w))
    np.testing.assert_allclose(g.angles[1], math.pi / 360)


@pytest.mark.parametrize("geometry", GEOMETRIES[:3])
def test_astra_vectors_equal_astras_own_conversion(geometry):
    """Our ray/source/detector conventions are ASTRA's, so sinograms are interchangeable."""
    expected = astra.geom_2vec(geometry.astra_projection_geometry())["Vectors"]
    np.testing.assert_allclose(geometry.astra_vectors(), expected, atol=1e-9)


def test_fan_default_detector_sees_the_whole_image():
    g = FanBeam2D((64, 64), num_angles=8, source_distance=100.0, detector_distance=60.0)
    vec = g.astra_vectors()[0]
    source, centre, step = vec[0:2], vec[2:4], vec[4:6]
    half_width = (g.num_detectors / 2) * np.linalg.norm(step)
    for corner in ([32, 32], [-32, 32], [32, -32], [-32, -32]):
        direction = np.asarray(corner, float) - source
        # intersect the ray through the corner with the detector line
        normal = np.array([-step[1], step[0]])
        t = np.dot(centre - source, normal) / np.dot(direction, normal)
        hit = source + t * direction
        assert abs(np.dot(hit - centre, step / np.linalg.norm(step))) < half_width


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_dict_round_trip_through_json(geometry):
    text = json.dumps(geometry.to_dict())
    back = geometry_from_dict(json.loads(text))
    assert back == geometry
    assert hash(back) == hash(geometry)
    assert back.fingerprint() == geometry.fingerprint()
    assert type(geometry).from_dict(geometry.to_dict()) == geometry


def test_distinct_geometries_have_distinct_fingerprints():
    prints = {g.fingerprint() for g in GEOMETRIES}
    assert len(prints) == len(GEOMETRIES)
    assert ParallelBeam2D((8, 8), num_angles=4) != ParallelBeam2D((8, 8), num_angles=5)
    assert len({ParallelBeam2D((8, 8), num_angles=4), ParallelBeam2D((8, 8), num_angles=4)}) == 1


def test_geometries_are_immutable():
    g = ParallelBeam2D((8, 8), num_angles=4)
    with pytest.raises(AttributeError, match="ParallelBeam2D is immutable"):
        g.pixel_size = 2.0


def test_cone_geometry_shapes():
    g = GEOMETRIES[3]
    assert g.sinogram_shape == (12, 10, 24)
    assert g.image_shape == (8, 16, 16)


class TestBadInput:
    def test_image_shape(self):
        with pytest.raises(ValueError, match=re.escape("image_shape: expected a tuple of 2 positive integers, found (0, 8)")):
            ParallelBeam2D((0, 8), num_angles=4)
        with pytest.raises(ValueError, match="image_shape: expected a tuple of 2 positive integers, found 8"):
            ParallelBeam2D(8, num_angles=4)

    def test_no_angles(self):
        with pytest.raises(ValueError, match="angles: expected num_angles or angles, found neither"):
            ParallelBeam2D((8, 8))

    def test_angles_and_count_disagree(self):
        with pytest.raises(ValueError, match="num_angles: expected 2 to match len\\(angles\\), found 3"):
            ParallelBeam2D((8, 8), num_angles=3, angles=[0.0, 1.0])

    def test_non_finite_angles(self):
        with pytest.raises(ValueError, match="angles: expected a non-empty sequence of finite angles"):
            ParallelBeam2D((8, 8), angles=[0.0, float("nan")])

    def test_pixel_size(self):
        with pytest.raises(ValueError, match="pixel_size: expected a positive number, found -1.0"):
            ParallelBeam2D((8, 8), pixel_size=-1.0, num_angles=4)

    def test_source_inside_object(self):
        with pytest.raises(ValueError, match="source_distance: expected more than the image's half diagonal 45.25 mm"):
            FanBeam2D((64, 64), num_angles=4, source_distance=40.0, detector_distance=10.0)

    def test_fan_detector_arguments(self):
        with pytest.raises(ValueError, match="num_detectors: expected a positive integer, found 0"):
            FanBeam2D((8, 8), num_angles=4, num_detectors=0, source_distance=100.0, detector_distance=50.0)
        with pytest.raises(ValueError, match="detector_distance: expected a finite number >= 0, found 'x'"):
            FanBeam2D((8, 8), num_angles=4, source_distance=100.0, detector_distance="x")

    def test_cone_arguments(self):
        kwargs = dict(detector_shape=(4, 4), detector_spacing=1.0, source_distance=50.0, detector_distance=10.0)
        g = ConeBeam3D((4, 4, 4), num_angles=3, **{**kwargs, "detector_spacing": np.float32(1.5)})
        assert g.detector_spacing == (1.5, 1.5)
        with pytest.raises(ValueError, match=re.escape("detector_spacing: expected a number or a (row, col) pair, found (1, 2, 3)")):
            ConeBeam3D((4, 4, 4), num_angles=3, **{**kwargs, "detector_spacing": (1, 2, 3)})
        with pytest.raises(ValueError, match="detector_spacing: expected a positive number, found -1"):
            ConeBeam3D((4, 4, 4), num_angles=3, **{**kwargs, "detector_spacing": -1})
        with pytest.raises(ValueError, match="detector_distance: expected a finite number >= 0, found -1"):
            ConeBeam3D((4, 4, 4), num_angles=3, **{**kwargs, "detector_distance": -1})

    def test_dict_errors(self):
        d = ParallelBeam2D((8, 8), num_angles=4).to_dict()
        with pytest.raises(ValueError, match="geometry dict: expected 'type' in"):
            geometry_from_dict({**d, "type": "helical"})
        with pytest.raises(ValueError, match="geometry dict: expected format_version 1, found 7"):
            geometry_from_dict({**d, "format_version": 7})
        del d["num_detectors"]
        with pytest.raises(ValueError, match=re.escape("geometry dict for 'parallel2d': missing keys ['num_detectors']")):
            geometry_from_dict(d)
