"""Test panels: versioned, deterministic sets of raw test files, one per condition, with a manifest.

    build_panel("ct-v1", "panels/ct-v1")        # or: pirecon panel build ct-v1 --out panels/ct-v1 [--small]
    verify_panel("panels/ct-v1")                # or: pirecon panel verify panels/ct-v1

A panel (``docs/protocols.md``, "Test panels") is a list of :class:`Condition`: each a call of
:func:`pirecon.data.simulate.simulate` with fixed parameters, a fixed seed and ``split="panel"``, whose
stream no training, validation, calibration or test stream reaches (:func:`pirecon._validation.split_seed`).
The same pirecon version therefore writes the same bytes on every machine. ``panel.json`` holds the panel's
name and version, and per condition the generator, its parameters, the seed, the number of cases and the
SHA-256 of its file; :func:`verify_panel` checks the files and the parameters against it and against the
panel's definition here. Building is lazy: a file whose bytes the manifest already vouches for is kept.

A condition built from the user's images (``real_images``: ``phantom="images:DIR"``) needs ``images=DIR``;
without it the condition is listed as skipped in the manifest, with the reason.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ArgumentError, PireconUserError

__all__ = ["Condition", "PANELS", "panel_conditions", "build_panel", "verify_panel", "read_manifest",
           "PanelError", "MANIFEST", "SMALL_CASES"]

MANIFEST = "panel.json"
MANIFEST_FORMAT = 1
GENERATOR = "pirecon.data.simulate.simulate"
SMALL_CASES = 8
"""Cases per condition of a ``small`` panel (tests and notebooks)."""


class PanelError(PireconUserError):
    """A panel directory that does not match its manifest or its definition."""


@dataclass(frozen=True)
class Condition:
    """One condition of a panel: ``n`` cases of ``simulate(**parameters, seed=seed, split="panel")`` (``None``:
    one per image of a directory).

    ``kind`` is ``"reference"`` (the in-distribution protocol), ``"shift"`` (one change of the acquisition
    or the images), ``"lesion_grid"`` (one cell of the lesion radius x contrast grid, ``cell`` =
    ``{"radius", "contrast"}``, radius in normalised coordinates where the image spans ``[-1, 1]``),
    ``"small_features"`` (small high-contrast features in every case, for recall) or ``"user_images"``.
    ``angle_range_degrees`` (CT) spreads the default number of angles over ``[0, range)`` instead of 180
    degrees (limited angle).
    """

    name: str
    description: str
    kind: str
    parameters: dict
    n: int | None = 200
    cell: dict | None = None
    angle_range_degrees: float | None = None
    seed: int = field(default=0)

    def record(self) -> dict:
        """The manifest's description of this condition (JSON types)."""
        out = {"name": self.name, "description": self.description, "kind": self.kind, "generator": GENERATOR,
               "parameters": self.parameters, "seed": self.seed, "split": "panel", "n": self.n}
        if self.cell is not None:
            out["cell"] = self.cell
        if self.angle_range_degrees is not None:
            out["angle_range_degrees"] = self.angle_range_degrees
        return out


def _seed(panel: str, condition: str) -> int:
    """A condition's seed: CRC-32 of ``panel/condition`` (stable when conditions are added or reordered)."""
    return zlib.crc32(f"{panel}/{condition}".encode())


LESION_RADII = (0.02, 0.03, 0.05, 0.08)
"""Lesion radii of the detection grid, normalised (1 = half the image): 1.3 to 5 pixels at 128 x 128."""
LESION_CONTRASTS = (0.05, 0.07, 0.1, 0.2)
"""Lesion contrasts of the detection grid (added to the background, phantom units)."""


def _lesion_grid(base: dict) -> list[tuple[str, str, str, dict, dict]]:
    cells = []
    for radius in LESION_RADII:
        for contrast in LESION_CONTRASTS:
            options = {"background": "shepp-logan", "num_lesions": [1, 1], "radius_range": [radius, radius],
                       "contrast": contrast, "presence_probability": 0.5}
            cells.append((f"lesions_r{radius:g}_c{contrast:g}",
                          f"one lesion of radius {radius:g} and contrast {contrast:g} on the Shepp-Logan background "
                          "in half the cases", "lesion_grid", {**base, "phantom": "lesions", "lesion_options": options},
                          {"radius": radius, "contrast": contrast}))
    return cells


def _ct_v1() -> list[tuple]:
    base = {"modality": "ct", "phantom": "ellipses", "image_size": 128, "noise": "gaussian:0.05"}
    small = {"background": "shepp-logan", "num_lesions": [1, 3], "radius_range": [0.015, 0.025], "contrast": 0.5,
             "presence_probability": 1.0}
    return [
        ("in_distribution", "the LPD-ellipses protocol: random ellipses, 128 x 128, 30 angles, 5% Gaussian noise",
         "reference", base, None),
        ("noise_2x", "Gaussian noise of 10% (2x)", "shift", {**base, "noise": "gaussian:0.1"}, None),
        ("noise_4x", "Gaussian noise of 20% (4x)", "shift", {**base, "noise": "gaussian:0.2"}, None),
        ("angles_20", "20 angles instead of 30", "shift", {**base, "num_angles": 20}, None),
        ("angles_10", "10 angles instead of 30", "shift", {**base, "num_angles": 10}, None),
        ("limited_angle_120", "30 angles over 120 degrees instead of 180 (limited angle)", "shift", base, None),
        ("pixel_detector", "0.8 mm pixels and 161 detectors instead of 1 mm and 183", "shift",
         {**base, "pixel_size": 0.8, "num_detectors": 161}, None),
        ("poisson_low_dose", "transmission Poisson noise at 4096 photons per detector pixel (LoDoPaB's dose) "
         "instead of Gaussian noise; images in 1/mm (phantom value 1 = water)", "shift",
         {**base, "noise": "poisson:4096"}, None),
        ("shepp_logan", "the modified Shepp-Logan head phantom instead of random ellipses", "shift",
         {**base, "phantom": "shepp-logan"}, None),
        *_lesion_grid(base),
        ("small_features", "1-3 discs of radius 0.015-0.025 (1-1.6 pixels) and contrast 0.5 in every case "
         "(FNAF-style small features, for recall)", "small_features",
         {**base, "phantom": "lesions", "lesion_options": small}, None),
    ]


def _mri_v1() -> list[tuple]:
    base = {"modality": "mri", "phantom": "ellipses", "image_size": 128, "coils": 8, "acceleration": 4,
            "center_fraction": 0.08, "mask": "random", "noise": "gaussian:0.001"}
    return [
        ("in_distribution", "the simulated VarNet protocol: random ellipses, 128 x 128, 8 coils, 4x random mask, "
         "complex noise 0.001", "reference", base, None),
        ("acceleration_8x", "8x instead of 4x", "shift", {**base, "acceleration": 8}, None),
        ("equispaced_mask", "an equispaced line mask instead of a random one", "shift",
         {**base, "mask": "equispaced"}, None),
        ("coils_4", "4 coils instead of 8", "shift", {**base, "coils": 4}, None),
        ("low_snr", "complex noise 0.01 (10x)", "shift", {**base, "noise": "gaussian:0.01"}, None),
        ("shepp_logan", "the modified Shepp-Logan head phantom instead of random ellipses", "shift",
         {**base, "phantom": "shepp-logan"}, None),
        *_lesion_grid(base),
    ]


PANELS = {"ct-v1": _ct_v1, "mri-v1": _mri_v1}
"""Each panel's conditions (the ``real_images`` condition is added when images are given)."""


def panel_conditions(name: str, small: bool = False, images: str | Path | None = None) -> list[Condition]:
    """The conditions of panel ``name`` (one of :data:`PANELS`): 200 cases each, :data:`SMALL_CASES` with
    ``small``; with ``images`` (a directory of DICOM or PNG slices) also ``real_images``."""
    if name not in PANELS:
        raise ArgumentError(f"panel: expected one of {', '.join(sorted(PANELS))}, found {name!r}")
    rows = PANELS[name]()
    if images is not None:
        rows.append(("real_images", f"every slice of {Path(images).name} (user-supplied)", "user_images",
                     {**rows[0][3], "phantom": f"images:{images}"}, None))
    n = SMALL_CASES if small else 200
    out = []
    for condition, description, kind, parameters, cell in rows:
        angle_range = 120.0 if condition == "limited_angle_120" else None
        out.append(Condition(condition, description, kind, parameters, n=None if kind == "user_images" else n,
                             cell=cell, angle_range_degrees=angle_range, seed=_seed(name, condition)))
    return out


def _simulate(condition: Condition, path: Path, progress: bool) -> Path:
    from ..data.simulate import simulate

    parameters = dict(condition.parameters)
    if condition.angle_range_degrees is not None:
        from ..ct import ParallelBeam2D

        size, count = parameters.pop("image_size"), parameters.pop("num_angles", 30)
        step = math.radians(condition.angle_range_degrees) / count
        parameters["geometry"] = ParallelBeam2D((size, size), parameters.pop("pixel_size", 1.0),
                                                angles=[k * step for k in range(count)])
    return simulate(path, n=condition.n, seed=condition.seed, split="panel", progress=progress, **parameters)


def read_manifest(directory: str | Path) -> dict:
    """A panel directory's ``panel.json``, checked for its format."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise PanelError(f"{directory}: expected a panel directory with {MANIFEST}, found none "
                         f"(build one with `pirecon panel build NAME --out {directory}`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PanelError(f"{path}: expected JSON, found a parse error ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise PanelError(f"{path}: expected a panel manifest of format {MANIFEST_FORMAT}, found {found!r}")
    return manifest


def _write_manifest(directory: Path, manifest: dict) -> None:
    from .._atomic import atomic_path

    with atomic_path(directory / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def build_panel(name: str, out: str | Path, *, small: bool = False, images: str | Path | None = None,
                progress: bool = True) -> dict:
    """Build panel ``name`` into directory ``out`` (one ``<condition>.h5`` per condition and ``panel.json``)
    and return its manifest. Lazy: a condition whose file the existing manifest vouches for (same parameters,
    same SHA-256) is kept; the manifest is rewritten after each condition, so a killed build resumes."""
    from tqdm.auto import tqdm

    from ..inference.checkpoint import file_sha256

    if images is not None and not Path(images).is_dir():
        raise ArgumentError(f"images: expected a directory of DICOM or PNG slices, found {str(images)!r}")
    conditions = panel_conditions(name, small=small, images=images)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (directory / MANIFEST).is_file():
        old = read_manifest(directory)
        if (old.get("panel"), old.get("small")) != (name, bool(small)):
            raise PanelError(f"{directory}: expected an empty directory or panel {name!r} (small={bool(small)}), "
                             f"found panel {old.get('panel')!r} (small={old.get('small')})")
        previous = {c["name"]: c for c in old.get("conditions", [])}
    manifest = {"format": MANIFEST_FORMAT, "panel": name, "version": int(name.rsplit("-v", 1)[1]),
                "small": bool(small), "pirecon_version": __version__, "split": "panel", "conditions": [],
                "skipped": [] if images is not None else
                [{"name": "real_images", "reason": "no --images DIR given (a directory of DICOM or PNG slices)"}]}
    for condition in tqdm(conditions, desc=f"panel {name}", unit="condition", disable=not progress):
        record = condition.record()
        path = directory / f"{condition.name}.h5"
        kept = previous.get(condition.name)
        digest = file_sha256(path) if kept and path.is_file() and {k: kept.get(k) for k in record} == record \
            else None
        if digest is None or digest != kept.get("sha256"):
            _simulate(condition, path, progress=False)
            digest = file_sha256(path)
        record.update(file=path.name, sha256=digest, bytes=path.stat().st_size)
        manifest["conditions"].append(record)
        _write_manifest(directory, {**manifest, "complete": False})
    manifest["complete"] = True
    _write_manifest(directory, manifest)
    return manifest


def verify_panel(directory: str | Path, images: str | Path | None = None) -> dict:
    """Check a built panel: its manifest is complete, names a known panel whose definition gives the same
    conditions (names, parameters, seeds, case counts), and every file has the SHA-256 the manifest holds.
    Returns the manifest; raises :class:`PanelError` naming each difference."""
    from ..inference.checkpoint import file_sha256

    directory = Path(directory)
    manifest = read_manifest(directory)
    if not manifest.get("complete"):
        raise PanelError(f"{directory}: expected a complete panel, found a build that stopped after "
                         f"{len(manifest.get('conditions', []))} conditions (run `pirecon panel build` again)")
    name = manifest.get("panel")
    user = next((c for c in manifest["conditions"] if c.get("kind") == "user_images"), None)
    if user is not None and images is None:
        images = user["parameters"]["phantom"].split(":", 1)[1]
    expected = {c.name: c.record() for c in panel_conditions(name, small=bool(manifest.get("small")), images=images)}
    found = {c["name"]: c for c in manifest["conditions"]}
    problems = []
    for key in sorted(set(expected) - set(found)):
        problems.append(f"condition {key!r} missing from the manifest")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"condition {key!r} is not part of {name}")
    for key in sorted(set(expected) & set(found)):
        record = found[key]
        differing = [k for k in expected[key] if expected[key][k] != record.get(k)]
        if differing:
            problems.append(f"{key}: {', '.join(differing)} differ from {name}'s definition")
        path = directory / str(record.get("file"))
        if not path.is_file():
            problems.append(f"{key}: file {path.name} missing")
        elif (digest := file_sha256(path)) != record.get("sha256"):
            problems.append(f"{key}: {path.name} has SHA-256 {digest[:16]}..., the manifest "
                            f"{str(record.get('sha256'))[:16]}...")
    if problems:
        raise PanelError(f"{directory}: expected panel {name} as its manifest and definition give, found "
                         f"{len(problems)} difference(s): " + "; ".join(problems))
    return manifest


def add_panel_arguments(parser) -> None:
    """``pirecon panel build NAME --out DIR [--small] [--images DIR]`` and ``pirecon panel verify DIR``."""
    actions = parser.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build a panel's raw test files and its manifest (lazy: kept files "
                                             "are not simulated again)")
    build.add_argument("name", choices=sorted(PANELS))
    build.add_argument("--out", required=True, help="the panel's directory")
    build.add_argument("--small", action="store_true", help=f"{SMALL_CASES} cases per condition (tests, notebooks)")
    build.add_argument("--images", help="a directory of DICOM or PNG slices: adds the real_images condition")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    verify = actions.add_parser("verify", help="check a panel's files and parameters against its manifest and "
                                               "its definition")
    verify.add_argument("directory")


def panel_main(args) -> int:
    if args.action == "build":
        manifest = build_panel(args.name, args.out, small=args.small, images=args.images, progress=not args.quiet)
        cases = sum(c["n"] or 0 for c in manifest["conditions"])
        print(f"wrote {args.out}/{MANIFEST}: {args.name}, {len(manifest['conditions'])} conditions, {cases} cases"
              + "".join(f"; skipped {s['name']}: {s['reason']}" for s in manifest["skipped"]))
        return 0
    manifest = verify_panel(args.directory)
    print(f"OK {args.directory}: {manifest['panel']} ({'small, ' if manifest['small'] else ''}"
          f"{len(manifest['conditions'])} conditions), every file as its manifest and definition give")
    return 0
