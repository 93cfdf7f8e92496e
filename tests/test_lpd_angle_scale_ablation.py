"""experiments/ablations/lpd_angle_scale.py: the LPD's operator scale fixed inside the block, restored after."""

from pathlib import Path

import torch

from conftest import load_script
from pirecon.ct import ParallelBeam2D, RayTransform
from pirecon.models import LearnedPrimalDual, operator_scale
from pirecon.noise import GaussianNoise
from pirecon.phantoms import random_ellipses
from pirecon.physics import Physics

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ablations" / "lpd_angle_scale.py"



def test_the_fixed_scale_changes_the_reconstruction_only_inside_the_block():
    script = load_script(SCRIPT)
    torch.manual_seed(0)
    model = LearnedPrimalDual(iterations=2, hidden=8).eval()
    physics = Physics(RayTransform(ParallelBeam2D((32, 32), pixel_size=1.0, num_angles=8)),
                      GaussianNoise(relative=0.05), "ct")
    y = physics.simulate(random_ellipses((32, 32), 2, seed=0), seed=1)
    with torch.no_grad():
        own = model(y, physics).image
        with script.operator_scale_fixed_at(operator_scale(physics)):  # the same scale: the same image
            torch.testing.assert_close(model(y, physics).image, own)
        with script.operator_scale_fixed_at(2 * operator_scale(physics)):
            assert (model(y, physics).image - own).abs().max() > 1e-3
        torch.testing.assert_close(model(y, physics).image, own)  # restored
