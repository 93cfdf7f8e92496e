import pytest
import torch

from pirecon.ct import RayTransform, fbp, lpd_ellipses_geometry
from pirecon.metrics import psnr
from pirecon.noise import GaussianNoise
from pirecon.phantoms import random_ellipses
from pirecon.tuning import grid_search


def test_picks_the_value_with_the_best_mean_score():
    truth = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    # reconstructions get worse the further the value is from 0.3
    result = grid_search(lambda v: truth + abs(v - 0.3) * 0.1 + 0.01, [0.1, 0.3, 0.5], truth)
    assert result.best == 0.3
    assert [v for v, _ in result.scores] == [0.1, 0.3, 0.5]
    assert result.best_score == max(s for _, s in result.scores)
    assert result.best_score == pytest.approx(float(psnr(truth + 0.01, truth).mean()))


def test_fbp_frequency_scaling_on_noisy_lpd_data():
    g = lpd_ellipses_geometry()
    A = RayTransform(g)
    truth = random_ellipses((128, 128), 4, seed=1)
    y = GaussianNoise(relative=0.05)(A(truth), seed=2)
    result = grid_search(lambda c: fbp(y, A, "ram-lak", frequency_scaling=c), [0.3, 0.6, 1.0], truth)
    # with 5% noise the full-band Ram-Lak filter is not the best: a lower cut-off wins
    assert result.best < 1.0
    assert dict(result.scores)[result.best] > dict(result.scores)[1.0] + 1.0


def test_empty_grid():
    with pytest.raises(ValueError, match="values: expected at least one value to try, found none"):
        grid_search(lambda v: v, [], torch.zeros(1, 1, 4, 4))
