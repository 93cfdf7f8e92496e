"""Tests of pirecon.phantoms: Shepp-Logan, the LPD random ellipses, lesions on background images."""

import math
import re

import numpy as np
import pytest
import torch

from pirecon.phantoms import (_axis_coords, _mask_at, _random_ellipse_params, body_mask, lesions, random_ellipses,
                              shepp_logan)

odl = pytest.importorskip("odl")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _pixel(x, y, shape):
    """(row, col) of the pixel whose centre is nearest to normalised (x, y)."""
    H, W = shape
    return round(((1.0 - y) * H - 1) / 2), round(((x + 1.0) * W - 1) / 2)


def _odl_array(element):
    return np.asarray(element.data)


# --------------------------------------------------------------------------
# Shepp-Logan
# --------------------------------------------------------------------------

def test_shepp_logan_shapes_and_dtype():
    assert shepp_logan((64, 48)).shape == (1, 1, 64, 48)
    assert shepp_logan((64, 48)).dtype == torch.float32
    p3 = shepp_logan((9, 16, 12), dtype=torch.float64, device="cpu")
    assert p3.shape == (1, 1, 9, 16, 12)
    assert p3.dtype == torch.float64
    assert shepp_logan([32, 32]).shape == (1, 1, 32, 32)


def test_shepp_logan_value_range_modified_vs_original():
    mod = shepp_logan((128, 128), modified=True, dtype=torch.float64)[0, 0]
    orig = shepp_logan((128, 128), modified=False, dtype=torch.float64)[0, 0]
    # no round-off below zero (1 - 0.8 - 0.2 must be exactly 0)
    assert mod.min().item() == 0.0 and mod.max().item() == 1.0
    assert orig.min().item() == 0.0 and orig.max().item() == 2.0
    assert set(np.round(mod.unique().numpy(), 6)) <= {0.0, 0.1, 0.2, 0.3, 0.4, 1.0}
    # same geometry: skull, brain and ventricle values at the same pixels
    r, c = _pixel(0.0, 0.9, (128, 128))  # between the two outer ellipses: skull
    assert mod[r, c] == 1.0 and orig[r, c] == 2.0
    r, c = _pixel(0.5, 0.0, (128, 128))  # brain matter
    assert mod[r, c] == pytest.approx(0.2) and orig[r, c] == pytest.approx(1.02)
    r, c = _pixel(0.22, 0.0, (128, 128))  # right ventricle
    assert mod[r, c] == 0.0 and orig[r, c] == pytest.approx(1.0)
    assert torch.equal(mod > 0.5, orig > 1.5)  # the skull ring


def test_shepp_logan_orientation():
    """Row 0 is the top: the three small ellipses are near the bottom rows."""
    shape = (256, 256)
    img = shepp_logan(shape, dtype=torch.float64)[0, 0]
    # the middle one of the three small ellipses, centre (0, -0.606)
    r, c = _pixel(0.0, -0.606, shape)
    assert r > 200 and img[r, c] == pytest.approx(0.3)
    r, c = _pixel(0.0, 0.606, shape)  # mirror point at the top: only brain matter
    assert img[r, c] == pytest.approx(0.2)
    # the large upper ellipse (centre (0, 0.35)) sits in the upper half
    r, c = _pixel(0.0, 0.35, shape)
    assert r < 128 and img[r, c] == pytest.approx(0.3)
    # right ventricle (centre x = 0.22, tilted -18 deg): top leans right, bottom left
    t = math.radians(18.0)
    r, c = _pixel(0.22 + 0.28 * math.sin(t), 0.28 * math.cos(t), shape)
    assert img[r, c] == 0.0
    r, c = _pixel(0.22 - 0.28 * math.sin(t), -0.28 * math.cos(t), shape)
    assert img[r, c] == 0.0
    r, c = _pixel(0.22 + 0.28 * math.sin(t), -0.28 * math.cos(t), shape)
    assert img[r, c] == pytest.approx(0.2)
    # left ventricle leans the other way (mirror symmetry about x = 0 holds
    # for everything but the small bottom ellipses)
    r, c = _pixel(-0.22 - 0.35 * math.sin(t), 0.35 * math.cos(t), shape)
    assert img[r, c] == 0.0


@pytest.mark.parametrize("modified", [True, False])
def test_shepp_logan_matches_odl_up_to_boundary(modified):
    """ODL indexes [ix, iy] with iy increasing upwards: ours is rot90 of it.

    ODL maps the outermost pixel *centres* to +-1 whereas we map the image
    edges there, so its ellipses are (N-1)/N of ours: boundary pixels differ.
    """
    N = 256
    space = odl.uniform_discr([-1, -1], [1, 1], (N, N))
    ref = np.rot90(_odl_array(odl.phantom.shepp_logan(space, modified=modified)))
    ours = shepp_logan((N, N), modified=modified).numpy()[0, 0]
    assert np.mean(np.abs(ours - ref) > 1e-6) <= 0.01


def test_shepp_logan_matches_odl_exactly_with_matched_grid():
    """Scaling ODL's ellipses by N/(N-1) removes its grid convention: then every pixel agrees."""
    N = 96
    s = N / (N - 1)
    space = odl.uniform_discr([-1, -1], [1, 1], (N, N))
    ell = [[e[0], e[1] * s, e[2] * s, e[3] * s, e[4] * s, e[5]]
           for e in odl.phantom.shepp_logan_ellipsoids(2, modified=True)]
    ref = np.rot90(_odl_array(odl.phantom.ellipsoid_phantom(space, ell)))
    ours = shepp_logan((N, N), dtype=torch.float64).numpy()[0, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_shepp_logan_3d_matches_odl_and_central_slice_is_2d():
    D, H, W = 17, 41, 41
    scale = np.array([W / (W - 1), H / (H - 1), D / (D - 1)])
    space = odl.uniform_discr([-1] * 3, [1] * 3, (W, H, D))
    ell = []
    for e in odl.phantom.shepp_logan_ellipsoids(3, modified=True):
        ell.append([e[0], *(np.array(e[1:4]) * scale), *(np.array(e[4:7]) * scale), *e[7:]])
    ref = _odl_array(odl.phantom.ellipsoid_phantom(space, ell))  # [ix, iy, iz]
    ref = np.flip(ref.transpose(2, 1, 0), axis=1)  # -> [z, row (y down), col]
    ours = shepp_logan((D, H, W), dtype=torch.float64).numpy()[0, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    assert torch.equal(shepp_logan((D, H, W))[0, 0, D // 2], shepp_logan((H, W))[0, 0])
    # the phantom ends inside the cube: top and bottom slices are empty
    assert ours[0].max() == 0.0 and ours[-1].max() == 0.0
    assert ours[D // 2 + 3].max() > 0.0


# --------------------------------------------------------------------------
# Random ellipses
# --------------------------------------------------------------------------

def test_random_ellipses_shapes_and_dtype():
    x = random_ellipses((32, 24), 3, seed=0)
    assert x.shape == (3, 1, 32, 24) and x.dtype == torch.float32
    x3 = random_ellipses((8, 10, 12), 2, seed=0, dtype=torch.float64)
    assert x3.shape == (2, 1, 8, 10, 12) and x3.dtype == torch.float64
    assert x.abs().sum() > 0 and x3.abs().sum() > 0


def test_random_ellipses_seeds():
    a = random_ellipses((32, 32), 2, seed=1)
    assert torch.equal(a, random_ellipses((32, 32), 2, seed=1))
    assert not torch.equal(a, random_ellipses((32, 32), 2, seed=2))
    assert not torch.equal(a[0], a[1])
    # generators: same state -> same images; a generator advances between calls
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    b1, b2 = random_ellipses((32, 32), 2, seed=g1), random_ellipses((32, 32), 2, seed=g2)
    assert torch.equal(b1, b2)
    assert not torch.equal(b1, random_ellipses((32, 32), 2, seed=g1))
    # fresh entropy
    assert not torch.equal(random_ellipses((32, 32)), random_ellipses((32, 32)))


@pytest.mark.parametrize("shape", [(40, 36), (6, 12, 10)])
def test_random_ellipses_image_depends_only_on_seed_and_index(shape):
    batch = random_ellipses(shape, 4, seed=11)
    for i in range(4):
        alone = random_ellipses(shape, 1, seed=11, start_index=i)
        assert torch.equal(batch[i], alone[0])
    assert torch.equal(batch[2:], random_ellipses(shape, 2, seed=11, start_index=2))


def test_random_ellipses_protocol_statistics():
    """Parameters over 200 images follow the LPD-ellipses distributions."""
    values, centres, half_axes, angles, counts = _random_ellipse_params(2, 200, 0, 50, 0)
    counts = counts.double()
    assert abs(counts.mean().item() - 50) < 2.0  # Poisson(50): sd of the mean 0.5
    assert 35 < counts.var().item() < 65  # Poisson: variance = mean
    mask = torch.arange(values.shape[1])[None] < counts[:, None]
    v, c, h, a = values[mask], centres[mask], half_axes[mask], angles[mask]
    assert v.numel() == int(counts.sum())
    assert (values[~mask] == 0).all()  # padded slots carry nothing
    # value (U - 0.5) * 0.4 * Exp(1): mean 0, variance 0.32 / 12, |value| < 0.2 * Exp(1)
    assert abs(v.mean().item()) < 0.01
    assert v.std().item() == pytest.approx(math.sqrt(0.32 / 12), rel=0.05)
    assert (v.abs() / 0.4).mean().item() == pytest.approx(0.25, rel=0.05)  # E|U-0.5| E[Exp] = 1/4
    # half-axes Exp(1) * 0.2: mean 0.2, sd 0.2, positive
    assert h.min() > 0
    assert h.mean().item() == pytest.approx(0.2, rel=0.03)
    assert h.std().item() == pytest.approx(0.2, rel=0.05)
    # centre U[-1, 1]^2: mean 0, variance 1/3
    assert c.min() >= -1 and c.max() <= 1
    assert c.mean(0).abs().max() < 0.03
    assert c.var(0).sub(1 / 3).abs().max() < 0.02
    # angle U[0, 2 pi)
    assert a.min() >= 0 and a.max() < 2 * math.pi
    assert a.mean().item() == pytest.approx(math.pi, rel=0.03)


def test_random_ellipses_3d_parameter_shapes():
    values, centres, half_axes, angles, counts = _random_ellipse_params(3, 5, 0, 50, 0)
    K = int(counts.max())
    assert values.shape == (5, K) and centres.shape == (5, K, 3)
    assert half_axes.shape == (5, K, 3) and angles.shape == (5, K, 3)


def _reference_2d(values, centres, half_axes, angles, shape):
    """Slow, straightforward evaluation of one image (numpy, one ellipse at a time)."""
    H, W = shape
    img = np.zeros(shape)
    for v, (cx, cy), (ax, ay), th in zip(values, centres, half_axes, angles):
        for r in range(H):
            y = 1 - (2 * r + 1) / H
            for col in range(W):
                x = (2 * col + 1) / W - 1
                # rotate the offset by -theta into the ellipse's own frame
                u = math.cos(th) * (x - cx) + math.sin(th) * (y - cy)
                w = -math.sin(th) * (x - cx) + math.cos(th) * (y - cy)
                if (u / ax) ** 2 + (w / ay) ** 2 <= 1:
                    img[r, col] += v
    return img


def test_random_ellipses_batch_rasterisation_matches_slow_reference():
    shape = (24, 20)
    batch = random_ellipses(shape, 3, seed=4, dtype=torch.float64)
    values, centres, half_axes, angles, counts = _random_ellipse_params(2, 3, 4, 50, 0)
    i, n = 1, int(counts[1])
    ref = _reference_2d(values[i, :n].numpy(), centres[i, :n].numpy(), half_axes[i, :n].numpy(),
                        angles[i, :n, 0].numpy(), shape)
    np.testing.assert_allclose(batch[i, 0].numpy(), ref, atol=1e-12)


def test_random_ellipses_match_odl_ellipsoid_phantom():
    """Our parameters fed to ODL's ellipsoid phantom give the same image (grid scaled)."""
    N = 48
    s = N / (N - 1)
    values, centres, half_axes, angles, counts = _random_ellipse_params(2, 1, 3, 50, 0)
    ell = [[float(values[0, k]), *(half_axes[0, k].numpy() * s), *(centres[0, k].numpy() * s),
            float(angles[0, k, 0])] for k in range(int(counts[0]))]
    space = odl.uniform_discr([-1, -1], [1, 1], (N, N))
    ref = np.rot90(_odl_array(odl.phantom.ellipsoid_phantom(space, ell)))
    ours = random_ellipses((N, N), seed=3, dtype=torch.float64).numpy()[0, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_random_ellipsoids_3d_match_reference():
    from scipy.spatial.transform import Rotation

    shape = (7, 9, 8)
    D, H, W = shape
    vol = random_ellipses(shape, 2, seed=9, dtype=torch.float64)[1, 0].numpy()
    values, centres, half_axes, angles, counts = _random_ellipse_params(3, 2, 9, 50, 0)
    z = (2 * np.arange(D) + 1) / D - 1
    y = 1 - (2 * np.arange(H) + 1) / H
    x = (2 * np.arange(W) + 1) / W - 1
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    pts = np.stack([X, Y, Z], -1)
    ref = np.zeros(shape)
    for k in range(int(counts[1])):
        R = Rotation.from_euler("ZXZ", angles[1, k].numpy()).as_matrix()  # intrinsic z-x-z
        q = (pts - centres[1, k].numpy()) @ R  # rows: R^T (p - c)
        ref += values[1, k].item() * (((q / half_axes[1, k].numpy()) ** 2).sum(-1) <= 1)
    np.testing.assert_allclose(vol, ref, atol=1e-12)


def test_random_ellipses_are_sums_of_ellipses():
    """With num_ellipses small, the image takes few distinct values, each a subset sum."""
    x = random_ellipses((64, 64), 1, seed=123, num_ellipses=2, dtype=torch.float64)[0, 0]
    values, *_, counts = _random_ellipse_params(2, 1, 123, 2, 0)
    n = int(counts[0])
    sums = {0.0}
    for v in values[0, :n].tolist():
        sums |= {s + v for s in sums}
    for u in x.unique().tolist():
        assert min(abs(u - s) for s in sums) < 1e-12


# --------------------------------------------------------------------------
# Lesions on background images (real anatomy)
# --------------------------------------------------------------------------

def _body_image(n=64):
    """A body (disc of radius 0.7, value 0.6) with a hole (radius 0.25 at (0.3, 0.1)) and, apart from it, a
    brighter blob (radius 0.2 at (-0.75, -0.75), value 1): ``(1, 1, n, n)`` float64, and the three masks."""
    x = _axis_coords(n, None, torch.float64).view(1, n)
    y = _axis_coords(n, None, torch.float64, flip=True).view(n, 1)
    disc = x ** 2 + y ** 2 <= 0.7 ** 2
    hole = (x - 0.3) ** 2 + (y - 0.1) ** 2 <= 0.25 ** 2
    blob = (x + 0.75) ** 2 + (y + 0.75) ** 2 <= 0.2 ** 2
    assert not (disc & blob).any()
    image = 0.6 * (disc & ~hole) + 1.0 * blob
    return image[None, None], disc & ~hole, hole, blob


def test_mask_lookup_follows_the_pixel_centre_convention():
    H, W = 5, 7
    mask = torch.rand(H, W, generator=torch.Generator().manual_seed(0)) > 0.5
    xs = _axis_coords(W, None, torch.float64)
    ys = _axis_coords(H, None, torch.float64, flip=True)  # row 0 at the top
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centres = torch.stack([xs[cols.flatten()], ys[rows.flatten()]], -1)
    for dx, dy in [(0, 0), (0.99 / W, 0), (-0.99 / W, 0.99 / H), (0.99 / W, -0.99 / H)]:  # within half a pixel
        found = _mask_at(mask, centres + torch.tensor([dx, dy], dtype=torch.float64))
        assert torch.equal(found, mask.flatten())
    corners = torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)  # the image border: outermost pixels
    assert _mask_at(mask, corners).tolist() == [bool(mask[0, 0]), bool(mask[-1, -1])]


def test_body_mask_is_the_largest_component_above_the_threshold():
    image, body, hole, blob = _body_image()
    mask = body_mask(image)
    assert mask.shape == (1, 1, 64, 64) and mask.dtype == torch.bool
    assert torch.equal(mask[0, 0], body)  # the blob is brighter but apart: left out, and so is the hole
    assert torch.equal(body_mask(image, 0.7)[0, 0], blob)  # above 0.7 only the blob is left
    assert not body_mask(torch.zeros(2, 1, 8, 8)).any()
    # diagonal contact does not join components: the larger one of two pixel squares touching at a corner
    two = torch.zeros(1, 1, 6, 6)
    two[0, 0, :3, :3] = 1.0
    two[0, 0, 3:5, 3:5] = 1.0
    assert torch.equal(body_mask(two)[0, 0], two[0, 0].bool() & (torch.arange(6) < 3)[:, None])


def test_lesions_on_images_lie_inside_the_body():
    from scipy import ndimage

    image, body, hole, blob = _body_image()
    images, seg, present = lesions((64, 64), 24, seed=5, background=image, presence_probability=1.0,
                                   num_lesions=(2, 4), radius_range=(0.04, 0.1), contrast=0.2)
    assert images.shape == seg.shape == (24, 1, 64, 64) and images.dtype == torch.float32
    assert present.tolist() == [1] * 24
    lesion_pixels = seg[:, 0].bool()
    assert int(lesion_pixels.sum()) > 24 * 2 * 10
    assert not (lesion_pixels & ~body).any()  # never in the hole, the blob or outside the body
    for b in range(24):
        labels, count = ndimage.label(seg[b, 0].numpy())
        assert count >= 2
        for r, c in ndimage.center_of_mass(seg[b, 0].numpy(), labels, range(1, count + 1)):
            r, c = round(r), round(c)
            assert body[r, c] and not hole[r, c] and not blob[r, c]
    # the segmentation is where the image exceeds its background by the contrast
    diff = images - image.float()
    assert torch.equal(seg.bool(), (diff - 0.2).abs() < 1e-5)
    assert torch.all((diff == 0) | seg.bool())


def test_lesions_on_images_are_deterministic_per_seed_and_index():
    image, *_ = _body_image(48)
    backgrounds = torch.cat([image, image.flip(-1), 0.5 * image.transpose(-1, -2), image.flip(-2)]).float()
    kwargs = dict(seed=9, radius_range=(0.05, 0.12), presence_probability=0.7)
    images, seg, present = lesions((48, 48), 4, background=backgrounds, **kwargs)
    again = lesions((48, 48), 4, background=backgrounds, **kwargs)
    for a, b in zip((images, seg, present), again):
        assert a.numpy().tobytes() == b.numpy().tobytes()
    for i in range(4):  # image i depends on (seed, i) and its background only
        single = lesions((48, 48), 1, start_index=i, background=backgrounds[i:i + 1], **kwargs)
        for a, b in zip((images, seg, present), single):
            assert torch.equal(a[i], b[0])
    # one background for every image: the same as repeating it
    shared = lesions((48, 48), 4, background=backgrounds[:1], **kwargs)
    repeated = lesions((48, 48), 4, background=backgrounds[:1].expand(4, -1, -1, -1), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(shared, repeated))
    other = lesions((48, 48), 4, background=backgrounds, **dict(kwargs, seed=10))
    assert not torch.equal(other[1], seg)
    # the default body mask is body_mask(background): passing it explicitly changes nothing
    explicit = lesions((48, 48), 4, background=backgrounds, body_mask=body_mask(backgrounds), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(explicit, (images, seg, present)))
    assert torch.equal(present, (seg.flatten(1).sum(1) > 0).long())


def test_lesions_placed_with_a_coarse_body_mask_are_the_same_on_a_finer_grid():
    coarse, *_ = _body_image(32)
    fine, *_ = _body_image(64)
    kwargs = dict(seed=2, presence_probability=1.0, radius_range=(0.1, 0.15), contrast=0.3)
    _, seg_coarse, p_coarse = lesions((32, 32), 6, background=coarse, **kwargs)
    _, seg_fine, p_fine = lesions((64, 64), 6, background=fine, body_mask=body_mask(coarse), **kwargs)
    assert torch.equal(p_coarse, p_fine)
    area_coarse = seg_coarse.flatten(1).sum(1) / 32 ** 2
    area_fine = seg_fine.flatten(1).sum(1) / 64 ** 2
    torch.testing.assert_close(area_fine.double(), area_coarse.double(), rtol=0.25, atol=0)
    pooled = torch.nn.functional.avg_pool2d(seg_fine.float(), 2)  # the same discs: the fine ones cover the coarse
    assert float(((pooled > 0) | ~seg_coarse.bool()).float().mean()) == 1.0


def test_lesions_without_body_get_label_zero():
    background = torch.zeros(3, 1, 16, 16)
    images, seg, present = lesions((16, 16), 3, seed=0, background=background, presence_probability=1.0)
    assert present.tolist() == [0, 0, 0] and not seg.any() and torch.equal(images, background)
    # all below the threshold: no body either
    images, seg, present = lesions((16, 16), 3, seed=0, background=background + 0.04, presence_probability=1.0)
    assert present.tolist() == [0, 0, 0] and not seg.any()


@pytest.mark.parametrize("kwargs, message", [
    (dict(background="cubes"),
     "background: expected 'ellipses', 'shepp-logan' or a tensor of background images (B, 1, H, W), found 'cubes'"),
    (dict(background=torch.zeros(16, 16)),
     "background: expected a tensor of background images (B, 1, H, W), found shape (16, 16)"),
    (dict(background=torch.zeros(3, 1, 16, 16)), "background: expected shape (2, 1, 16, 16) or (1, 1, 16, 16), "
                                                 "found (3, 1, 16, 16)"),
    (dict(background=torch.zeros(2, 1, 16, 8)), "background: expected shape (2, 1, 16, 16) or (1, 1, 16, 16), "
                                                "found (2, 1, 16, 8)"),
    (dict(background=torch.zeros(2, 1, 16, 16, dtype=torch.uint8)),
     "background: expected a real floating tensor, found dtype torch.uint8"),
    (dict(background=torch.full((2, 1, 16, 16), 255.0)),
     "background: expected values in [0, 1], found values in [255, 255]"),
    (dict(background=torch.full((2, 1, 16, 16), float("nan"))), "background: expected finite values, found NaN or Inf"),
    (dict(background=torch.zeros(2, 1, 16, 16), body_threshold=1.0),
     "body_threshold: expected a number in [0, 1), found 1.0"),
    (dict(background=torch.zeros(2, 1, 16, 16), body_threshold=0.1, body_mask=torch.ones(1, 1, 4, 4, dtype=bool)),
     "body_threshold: expected either body_threshold or body_mask, found both"),
    (dict(background=torch.zeros(2, 1, 16, 16), body_mask=torch.ones(1, 1, 4, 4)),
     "body_mask: expected a bool tensor (B, 1, h, w), found torch.float32 of shape (1, 1, 4, 4)"),
    (dict(background=torch.zeros(2, 1, 16, 16), body_mask=torch.ones(3, 1, 4, 4, dtype=bool)),
     "body_mask: expected shape (2, 1, h, w) or (1, 1, h, w), found (3, 1, 4, 4)"),
    (dict(body_threshold=0.1), "body_threshold: only applies to a tensor of background images, "
                               "found background 'ellipses'"),
    (dict(background="shepp-logan", body_mask=torch.ones(1, 1, 4, 4, dtype=bool)),
     "body_mask: only applies to a tensor of background images, found background 'shepp-logan'"),
])
def test_lesion_background_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        lesions((16, 16), 2, seed=0, **kwargs)
    assert str(err.value) == message


def test_body_mask_errors():
    with pytest.raises(ValueError) as err:
        body_mask(torch.zeros(1, 1, 8, 8), threshold=-0.1)
    assert str(err.value) == "threshold: expected a number in [0, 1), found -0.1"
    with pytest.raises(ValueError) as err:
        body_mask(np.zeros((1, 1, 8, 8)))
    assert str(err.value).startswith("background: expected a tensor of background images (B, 1, H, W), found array(")


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [shepp_logan, random_ellipses])
@pytest.mark.parametrize("shape, message", [
    ((64,), "shape: expected a tuple of 2 or 3 positive ints, found (64,)"),
    ((2, 3, 4, 5), "shape: expected a tuple of 2 or 3 positive ints, found (2, 3, 4, 5)"),
    ("64x64", "shape: expected a tuple of 2 or 3 positive ints, found '64x64'"),
    (64, "shape: expected a tuple of 2 or 3 positive ints, found 64"),
    ((64, 0), "shape[1]: expected a positive integer, found 0"),
    ((64, 32.0), "shape[1]: expected a positive integer, found 32.0"),
    ((-4, 32, 32), "shape[0]: expected a positive integer, found -4"),
])
def test_bad_shape(fn, shape, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fn(shape)


def test_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("batch_size: expected a positive integer, found 0")):
        random_ellipses((8, 8), 0)
    with pytest.raises(ValueError, match=re.escape("batch_size: expected a positive integer, found 2.0")):
        random_ellipses((8, 8), 2.0)
    with pytest.raises(ValueError, match=re.escape("num_ellipses: expected a positive number, found -1")):
        random_ellipses((8, 8), num_ellipses=-1)
    with pytest.raises(ValueError, match=re.escape("start_index: expected a non-negative integer, found -1")):
        random_ellipses((8, 8), start_index=-1)
    with pytest.raises(TypeError, match=re.escape("dtype: expected a real floating torch.dtype, found torch.int32")):
        random_ellipses((8, 8), dtype=torch.int32)
    with pytest.raises(TypeError, match=re.escape("dtype: expected a real floating torch.dtype, found torch.complex64")):
        shepp_logan((8, 8), dtype=torch.complex64)
    with pytest.raises(TypeError, match=re.escape("modified: expected a bool, found str")):
        shepp_logan((8, 8), modified="yes")
    with pytest.raises(TypeError, match=re.escape("seed: expected an int, a torch.Generator or None, found str")):
        random_ellipses((8, 8), seed="0")


def test_numpy_integer_shape_is_accepted():
    assert shepp_logan((np.int64(16), np.int32(8))).shape == (1, 1, 16, 8)


@cuda
def test_cuda_matches_cpu():
    cpu = random_ellipses((32, 32), 2, seed=3, dtype=torch.float64)
    gpu = random_ellipses((32, 32), 2, seed=3, dtype=torch.float64, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)
    torch.testing.assert_close(shepp_logan((64, 64), device="cuda").cpu(), shepp_logan((64, 64)))
