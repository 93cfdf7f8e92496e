"""Regenerate ``tests/data/fastmri_reference.npz``: what fastMRI's own functions return for the cases
that pirecon's tests compare with.

The tests compare pirecon's masks and centred FFTs with these stored values on every run, and
with fastMRI itself when ``fastmri`` imports (the live values must then also equal the stored
ones). The values were produced with fastmri 0.3.0 (``FASTMRI_VERSION``) by the functions below:

- ``fastmri.data.subsample.RandomMaskFunc(...)(shape, seed=...)`` and its
  ``calculate_center_mask``;
- ``fastmri.data.subsample.EquispacedMaskFractionFunc`` and ``EquiSpacedMaskFunc`` with each
  ``offset``;
- ``fastmri.fft2c`` and ``fastmri.ifft2c`` on fixed complex inputs (stored too);
- ``fastmri.data.mri_data.SliceDataset`` (with ``transforms.VarNetDataTransform`` for multi-coil
  data) reading files that pirecon writes (``write_loader_files``): what it returned is stored in
  ``fastmri_loader_reference.json``, together with the layout of those files as far as fastMRI's
  loaders read it (``fastmri_layout``). Without fastmri, the tests check that pirecon still writes
  that layout, byte for byte in the header.

To regenerate, in an environment with pirecon's dev extra (fastmri 0.3.0 declares torch and
torchvision; ``--no-deps`` keeps the installed torch)::

    pip install --no-deps fastmri==0.3.0
    python tests/data/make_fastmri_reference.py            # rewrites the .npz
    python tests/data/make_fastmri_reference.py --check    # exit 1 if the stored values differ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FASTMRI_VERSION = "0.3.0"
OUT = Path(__file__).resolve().parent / "fastmri_reference.npz"
LOADER_OUT = Path(__file__).resolve().parent / "fastmri_loader_reference.json"

# fastMRI's shapes are its real view of k-space, (..., rows, columns, 2): columns are shape[-2]
ROWS = 640
CENTRE_WIDTHS = (368, 369, 372, 320, 15, 16, 20)
CENTRE_FRACTIONS = (0.08, 0.04, 0.125, 0.1)
EQUISPACED_FRACTION_CASES = ((368, 0.08, 4), (372, 0.04, 8), (101, 0.1, 3), (64, 0.2, 4))
EQUISPACED_INTEGER_CASES = ((368, 0.08, 4), (369, 0.04, 8))
RANDOM_WIDTH, RANDOM_COUNT, RANDOM_FRACTIONS, RANDOM_ACCELERATIONS = 368, 300, (0.08, 0.04), (4, 8)
FFT_SHAPES = ((6, 4), (5, 3))  # even and odd sizes


def centre_key(width: int, fraction: float) -> str:
    return f"centre_{width}_{fraction:g}"


def equispaced_key(kind: str, width: int, fraction: float, accel: int) -> str:
    return f"equispaced_{kind}_{width}_{fraction:g}_{accel}"


def fft_key(kind: str, shape: tuple[int, int]) -> str:
    return f"fft_{kind}_{shape[0]}x{shape[1]}"


def _bool_lines(mask) -> np.ndarray:
    return np.asarray(mask).reshape(-1).astype(bool)


def fastmri_values() -> dict[str, np.ndarray]:
    """Every stored value, computed with the installed ``fastmri``."""
    import fastmri
    import torch
    from fastmri.data import subsample

    values: dict[str, np.ndarray] = {}

    # number of centre lines and the centre block of RandomMaskFunc (seed 0), at acceleration 4
    for width in CENTRE_WIDTHS:
        for fraction in CENTRE_FRACTIONS:
            shape = (1, ROWS, width, 2)
            fn = subsample.RandomMaskFunc([fraction], [4])
            _, num_low = fn(shape, seed=0)
            centre = _bool_lines(fn.calculate_center_mask(shape, num_low))
            values[centre_key(width, fraction) + "_num_low"] = np.array(num_low, dtype=np.int64)
            values[centre_key(width, fraction) + "_mask"] = centre

    # every mask the equispaced functions can draw: one per offset
    for width, fraction, accel in EQUISPACED_FRACTION_CASES:
        fn = subsample.EquispacedMaskFractionFunc([fraction], [accel])
        num_low = round(width * fraction)
        spacing = (accel * (num_low - width)) / (num_low * accel - width)
        values[equispaced_key("fraction", width, fraction, accel)] = np.stack(
            [_bool_lines(fn((1, ROWS, width, 2), offset=o, seed=0)[0]) for o in range(round(spacing))])
    for width, fraction, accel in EQUISPACED_INTEGER_CASES:
        fn = subsample.EquiSpacedMaskFunc([fraction], [accel])
        values[equispaced_key("integer", width, fraction, accel)] = np.stack(
            [_bool_lines(fn((1, ROWS, width, 2), offset=o, seed=0)[0]) for o in range(accel)])

    # statistics of RandomMaskFunc over seeds 0 .. RANDOM_COUNT - 1: per number of centre lines, the
    # rate of sampled lines outside fastMRI's own centre block, and whether that block is always sampled
    fn = subsample.RandomMaskFunc(list(RANDOM_FRACTIONS), list(RANDOM_ACCELERATIONS))
    shape = (1, ROWS, RANDOM_WIDTH, 2)
    draws = [fn(shape, seed=s) for s in range(RANDOM_COUNT)]
    lows = np.array([low for _, low in draws], dtype=np.int64)
    lines = np.stack([_bool_lines(m) for m, _ in draws])
    distinct = np.unique(lows)
    rates, centre_sampled = [], []
    for low in distinct:
        centre = _bool_lines(fn.calculate_center_mask(shape, int(low)))
        chosen = lines[lows == low]
        rates.append(chosen[:, ~centre].mean())
        centre_sampled.append(chosen[:, centre].all())
    values["random_num_low"] = lows
    values["random_distinct_num_low"] = distinct
    values["random_outer_rate"] = np.array(rates, dtype=np.float64)
    values["random_centre_sampled"] = np.array(centre_sampled, dtype=bool)

    # centred orthonormal FFTs on fixed inputs (fastMRI's real view: trailing dimension of 2)
    rng = np.random.default_rng(0)
    for shape in FFT_SHAPES:
        x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        real = torch.view_as_real(torch.from_numpy(x))
        values[fft_key("input", shape)] = x
        values[fft_key("fft2c", shape)] = torch.view_as_complex(fastmri.fft2c(real).contiguous()).numpy()
        values[fft_key("ifft2c", shape)] = torch.view_as_complex(fastmri.ifft2c(real).contiguous()).numpy()
    return values


def _line_cases() -> list[tuple[str, int]]:
    """``(key, width)`` of every stored line-mask array, in storage order."""
    cases = [(centre_key(w, f) + "_mask", w) for w in CENTRE_WIDTHS for f in CENTRE_FRACTIONS]
    cases += [(equispaced_key("fraction", w, f, a), w) for w, f, a in EQUISPACED_FRACTION_CASES]
    cases += [(equispaced_key("integer", w, f, a), w) for w, f, a in EQUISPACED_INTEGER_CASES]
    return cases


def pack(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values in a few arrays (a file of a few KB): line masks as bits, FFT cases concatenated."""
    lines = [np.atleast_2d(values[key]) for key, _ in _line_cases()]
    return {
        "fastmri_version": np.array(FASTMRI_VERSION),
        "centre_num_low": np.array([[values[centre_key(w, f) + "_num_low"] for f in CENTRE_FRACTIONS]
                                    for w in CENTRE_WIDTHS], dtype=np.int16),
        "line_mask_counts": np.array([m.shape[0] for m in lines], dtype=np.int16),
        "line_mask_bits": np.packbits(np.concatenate([m.reshape(-1) for m in lines])),
        "random_num_low": values["random_num_low"].astype(np.int16),
        "random_distinct_num_low": values["random_distinct_num_low"].astype(np.int16),
        "random_outer_rate": values["random_outer_rate"],
        "random_centre_sampled": values["random_centre_sampled"],
        **{f"fft_{kind}": np.concatenate([values[fft_key(kind, s)].reshape(-1) for s in FFT_SHAPES])
           for kind in ("input", "fft2c", "ifft2c")},
    }


def unpack(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values of :func:`fastmri_values` from :func:`pack`'s arrays."""
    values: dict[str, np.ndarray] = {}
    for i, w in enumerate(CENTRE_WIDTHS):
        for j, f in enumerate(CENTRE_FRACTIONS):
            values[centre_key(w, f) + "_num_low"] = np.array(stored["centre_num_low"][i, j], dtype=np.int64)
    cases = _line_cases()
    sizes = [int(n) * w for n, (_, w) in zip(stored["line_mask_counts"], cases)]
    bits = np.unpackbits(stored["line_mask_bits"], count=sum(sizes)).astype(bool)
    for (key, width), size, start in zip(cases, sizes, np.cumsum([0, *sizes[:-1]])):
        block = bits[start:start + size].reshape(-1, width)
        values[key] = block[0] if key.endswith("_mask") else block
    values["random_num_low"] = stored["random_num_low"].astype(np.int64)
    values["random_distinct_num_low"] = stored["random_distinct_num_low"].astype(np.int64)
    values["random_outer_rate"] = stored["random_outer_rate"]
    values["random_centre_sampled"] = stored["random_centre_sampled"]
    for kind in ("input", "fft2c", "ifft2c"):
        flat, start = stored[f"fft_{kind}"], 0
        for shape in FFT_SHAPES:
            size = shape[0] * shape[1]
            values[fft_key(kind, shape)] = flat[start:start + size].reshape(shape)
            start += size
    return values


def load() -> dict[str, np.ndarray]:
    """The stored values, as :func:`fastmri_values` returns them."""
    with np.load(OUT) as data:
        stored = {key: data[key] for key in data.files}
    if str(stored["fastmri_version"]) != FASTMRI_VERSION:
        raise ValueError(f"{OUT}: expected values of fastmri {FASTMRI_VERSION}, found {stored['fastmri_version']}")
    return unpack(stored)


def differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Keys whose arrays differ (or are missing on one side)."""
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or not np.array_equal(a[k], b[k]))


# --------------------------------------------------------------------------------------------------
# fastMRI's loaders on pirecon's files
# --------------------------------------------------------------------------------------------------

LOADER_SLICES = 3
LOADER_LINE_MASK = (1, 0, 0, 1, 1, 1, 0, 1, 0, 0)  # W = 10
# what fastMRI's SliceDataset reads of a file: these datasets, the ISMRMRD header and the root attributes
FASTMRI_DATASETS = ("kspace", "mask", "reconstruction_rss", "reconstruction_esc")
FASTMRI_ATTRS = ("acquisition", "max", "norm", "patient_id")


def write_loader_files(directory: Path) -> dict[str, Path]:
    """A multi-coil and a single-coil file written by pirecon, in the directories SliceDataset expects."""
    from pirecon.data.formats import write_mri_raw

    rng = np.random.default_rng(0)
    n = LOADER_SLICES

    def complex_normal(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    mask = np.array(LOADER_LINE_MASK, dtype=np.float32)
    (directory / "multicoil").mkdir(parents=True, exist_ok=True)
    (directory / "singlecoil").mkdir(parents=True, exist_ok=True)
    multi = write_mri_raw(directory / "multicoil" / "a.h5", complex_normal((n, 4, 12, 10)) * mask, mask=mask,
                          reconstruction_rss=rng.random((n, 8, 8), dtype=np.float32),
                          attrs={"acquisition": "CORPD_FBK", "patient_id": "p1"})
    single = write_mri_raw(directory / "singlecoil" / "b.h5", complex_normal((n, 12, 10)),
                           reconstruction_rss=rng.random((n, 8, 8), dtype=np.float32))
    return {"multicoil": Path(multi), "singlecoil": Path(single)}


def _plain(value):
    """An HDF5 attribute as JSON: strings as text, numbers as their kind (values depend on random data)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    return f"<{np.asarray(value).dtype.kind}>"


def fastmri_layout(path: Path) -> dict:
    """The parts of a file that fastMRI's loaders read: shapes and dtypes of its datasets, the ISMRMRD
    header's text, its root attributes (strings by value, numbers by kind)."""
    import h5py

    with h5py.File(path, "r") as f:
        header = f["ismrmrd_header"][()]
        return {
            "datasets": {name: [list(f[name].shape), f[name].dtype.str] for name in FASTMRI_DATASETS if name in f},
            "ismrmrd_header": header.decode() if isinstance(header, bytes) else str(header),
            "attrs": {name: _plain(f.attrs[name]) for name in FASTMRI_ATTRS if name in f.attrs},
        }


def fastmri_loader_values(directory: Path) -> dict:
    """Write the loader files into ``directory`` and record what fastMRI's loaders return for them."""
    from fastmri.data import mri_data, transforms

    paths = write_loader_files(directory)
    multi = mri_data.SliceDataset(directory / "multicoil", "multicoil", transform=transforms.VarNetDataTransform())
    sample = multi[1]
    single = mri_data.SliceDataset(directory / "singlecoil", "singlecoil")
    kspace, mask, target, attrs, _, _ = single[0]
    return {
        "fastmri_version": FASTMRI_VERSION,
        "layout": {kind: fastmri_layout(path) for kind, path in paths.items()},
        "multicoil": {
            "num_slices": len(multi),
            "masked_kspace_shape": list(sample.masked_kspace.shape),
            "mask": [bool(v) for v in sample.mask.reshape(-1).tolist()],
            "target_shape": list(sample.target.shape),
            "crop_size": [int(v) for v in sample.crop_size],
        },
        "singlecoil": {
            "num_slices": len(single),
            "kspace_shape": list(kspace.shape),
            "mask": None if mask is None else np.asarray(mask).reshape(-1).tolist(),
            "target_shape": list(target.shape),
            "recon_size": [int(v) for v in attrs["recon_size"]],
            "encoding_size": [int(v) for v in attrs["encoding_size"]],
            "padding_left": int(attrs["padding_left"]),
            "padding_right": int(attrs["padding_right"]),
        },
    }


def load_loader_values() -> dict:
    """The stored :func:`fastmri_loader_values`."""
    stored = json.loads(LOADER_OUT.read_text())
    if stored["fastmri_version"] != FASTMRI_VERSION:
        raise ValueError(f"{LOADER_OUT}: expected values of fastmri {FASTMRI_VERSION}, "
                         f"found {stored['fastmri_version']}")
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored values, write nothing")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    found = version("fastmri")
    if found != FASTMRI_VERSION:
        print(f"fastmri: expected version {FASTMRI_VERSION}, found {found}", file=sys.stderr)
        return 2
    import tempfile

    values = fastmri_values()
    with tempfile.TemporaryDirectory() as directory:
        loader = fastmri_loader_values(Path(directory))
    if args.check:
        differ = differences(values, load())
        if loader != load_loader_values():
            differ.append(LOADER_OUT.name)
        print("stored values match fastmri" if not differ else f"differ: {', '.join(differ)}")
        return 1 if differ else 0
    packed = pack(values)
    assert not differences(unpack(packed), values), "pack/unpack lost values"
    np.savez_compressed(OUT, **packed)
    LOADER_OUT.write_text(json.dumps(loader, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) and {LOADER_OUT} ({LOADER_OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
