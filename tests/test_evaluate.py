"""pirecon evaluate: per-condition metrics on a verified panel, the blind-spot map, the report, resuming."""

import csv
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pirecon.evaluation import PanelError, build_panel
from pirecon.evaluation.evaluate import evaluate, method_reconstructor, rose_detectability, smallest_detected
from pirecon.evaluation.report import BELOW_MARK, below_baselines, summary_paragraph

HEADS = {"segmentation": {"channels": 4, "depth": 2}, "classification": {"channels": 4, "depth": 2}}


@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ct-v1")
    build_panel("ct-v1", directory, small=True, progress=False)
    return directory


@pytest.fixture(scope="module")
def task_checkpoint(panel, tmp_path_factory):
    """An untrained task model on the FBP image: a learned model's outputs without training time."""
    from pirecon.data.acquisition import read_acquisition
    from pirecon.training import ReconstructionModule

    torch.manual_seed(0)
    module = ReconstructionModule({"class_path": "task_adapted", "init_args": {
        "reconstruction": {"class_path": "classical"}, **HEADS}})
    physics = read_acquisition(panel / "in_distribution.h5").physics
    module.set_physics("ct", physics.metadata["geometry"], physics.noise)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("task") / "task.ckpt"
    torch.save(checkpoint, path)
    return path


def test_the_rose_ratio_is_contrast_times_root_area_over_the_noise():
    torch.manual_seed(0)
    truth = torch.full((2, 1, 64, 64), 0.5)
    mask = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    mask[0, 0] = (yy - 32) ** 2 + (xx - 32) ** 2 <= 16  # 49 pixels
    truth = truth + 0.1 * mask
    noise = 0.02 * torch.randn_like(truth)
    ratios = rose_detectability(truth + noise, truth, mask, contrast=0.1)
    assert math.isnan(ratios[1])  # no lesion in the second image
    assert ratios[0] == pytest.approx(0.1 * math.sqrt(49) / 0.02, rel=0.25)
    blurred = rose_detectability(torch.full_like(truth, 0.5) + noise, truth, mask, contrast=0.1)
    assert abs(blurred[0]) < 5  # the lesion is gone from the image: not detected
    assert smallest_detected({(0.02, 0.1): 0.5, (0.05, 0.1): 0.95, (0.08, 0.1): 1.0, (0.08, 0.05): 0.3}) == \
        {0.05: None, 0.1: 0.05}


def test_evaluate_reports_every_condition_marks_what_cannot_run_and_resumes(panel, task_checkpoint, tmp_path):
    import pirecon

    models = {"task": pirecon.load(task_checkpoint), "tv": method_reconstructor("tv:lam=0.01,iterations=20"),
              "fbp": method_reconstructor("fbp")}
    result = evaluate(models, panel, tmp_path, baselines=["tv", "fbp"], progress=False)
    rows = result["rows"]
    assert list(rows) == ["task", "tv", "fbp"] and len(rows["fbp"]) == 26
    assert rows["fbp"]["limited_angle_120"] == {"cases": 0, "error": "fbp: expected equispaced angles covering "
                                                "[0, pi) or [0, 2 pi), found 30 angles from 0 to 2.025 rad"}
    assert "psnr" in rows["tv"]["limited_angle_120"]  # TV runs on any angles
    noise = rows["tv"]["noise_4x"]
    assert noise["psnr_gap"][0] == pytest.approx(rows["tv"]["in_distribution"]["psnr"][0] - noise["psnr"][0])
    assert noise["psnr_gap"][0] > 1 and rows["tv"]["in_distribution"]["psnr_gap"][0] == 0
    cell = rows["task"]["lesions_r0.08_c0.2"]  # a task model: the label's sensitivity and specificity
    assert {"sensitivity", "specificity", "auc", "rose_detection"} <= set(cell)
    grid = {(g["radius"], g["contrast"]): g["detection_rate"] for g in result["grid"]["task"]}
    assert grid[(0.08, 0.2)] == cell["sensitivity"][0] and len(grid) == 16
    fbp_grid = {(g["radius"], g["contrast"]): g["detection_rate"] for g in result["grid"]["fbp"]}
    assert fbp_grid[(0.08, 0.2)] == rows["fbp"]["lesions_r0.08_c0.2"]["rose_detection"][0]
    flag = result["ood"]["tv"]  # calibrated on in-distribution slices of the calibration split
    assert flag["failing"] + flag["others"] == 8 * 9 and 0 <= flag["flagged"] <= 1 and 0 <= flag["false_alarms"] <= 1
    assert (tmp_path / "ood_calibration.h5").is_file() and "ood_flagged" in rows["tv"]["noise_4x"]
    assert models["tv"].ood_calibration["n"] == 40
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Blind-spot report: task, tv, fbp on ct-v1 (small)\n\n" + summary_paragraph(result))
    assert "| limited_angle_120 |" in report and "cannot run" in report
    summary = report.split("### Summary: mean PSNR (dB) and its change from in-distribution\n")[1].split("###")[0]
    split = ([cell.strip() for cell in line.strip().strip("|").split("|")] for line in summary.splitlines()
             if line.startswith("| "))
    cells = {parts[0]: parts[1:] for parts in split}
    assert cells["condition"] == ["task PSNR (gap)", "tv PSNR (gap)", "fbp PSNR (gap)"]
    assert cells["noise_4x"][1] == f"{noise['psnr'][0]:.2f} ({-noise['psnr_gap'][0]:+.2f})"
    assert cells["in_distribution"][1] == f"{rows['tv']['in_distribution']['psnr'][0]:.2f}"
    assert cells["limited_angle_120"][2] == "cannot run" and "lesions_r0.08_c0.2" not in cells
    marked = below_baselines(result, "task")  # TV is above the untrained task model with fewer angles
    assert marked and all(cells[c][0].endswith(BELOW_MARK) == (c in marked) for c in cells if c in rows["task"])
    assert cells["smallest lesion radius detected (at contrast)"][0].endswith(f" at {max(result['smallest']['task'])}")
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * 26
    assert json.loads((tmp_path / "metrics.json").read_text())["models"] == ["task", "tv", "fbp"]
    assert (tmp_path / "blind_spots.png").stat().st_size > 5000
    assert {"gallery_task.png", "gallery_fbp.png", "gallery_tv.png"} <= \
        {p.name for p in tmp_path.glob("gallery_*.png")}
    with np.load(tmp_path / "cases" / "task" / "noise_4x.npz") as f:  # the worst cases, worst first
        worst = f["gallery_index"]
        assert len(worst) == 3 and f["psnr"][worst].tolist() == sorted(f["psnr"])[:3]
        assert f["gallery_segmentation"].shape == f["gallery_truth"].shape == (3, 128, 128)
    _check_html(tmp_path / "report.html", summary_paragraph(result), figures=1 + 3)
    # a model below the best baseline's PSNR is marked (here TV at 20 iterations against the Hann-filtered FBP of
    # the task model, taken as the baseline); the baselines themselves never are
    assert rows["tv"]["in_distribution"]["psnr"][0] < rows["task"]["in_distribution"]["psnr"][0]
    assert below_baselines({**result, "baselines": ["task"]}, "tv")["in_distribution"] == "task"
    assert below_baselines(result, "tv") == {} and below_baselines(result, "fbp") == {}
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cases").rglob("*.npz")}
    assert len(stamps) == 3 * 26
    (tmp_path / "cases" / "tv" / "noise_2x.npz").unlink()  # killed before this one was written
    again = evaluate(models, panel, tmp_path, baselines=["tv", "fbp"], progress=False)
    np.testing.assert_equal(again["rows"], result["rows"])  # NaN bounds where a cell has one lesion case
    changed = {p for p in (tmp_path / "cases").rglob("*.npz") if stamps.get(p) != p.stat().st_mtime_ns}
    assert changed == {tmp_path / "cases" / "tv" / "noise_2x.npz"}
    # the reconstruction time: summed over the stored conditions, so a resumed run reports the whole panel's
    assert set(result["seconds"]) == set(models) and all(s > 0 for s in result["seconds"].values())
    with np.load(tmp_path / "cases" / "tv" / "noise_2x.npz") as f:
        rerun = float(f["seconds"])
    with np.load(tmp_path / "cases" / "tv" / "noise_4x.npz") as f:
        kept = float(f["seconds"])
    assert again["seconds"]["fbp"] == result["seconds"]["fbp"] and kept > 0 and rerun > 0
    assert "Reconstruction time over the panel (wall clock, summed over conditions): task " in report
    # resuming reuses the cases of the same model only: other parameters under the name "tv" are refused
    files_before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    from pirecon.errors import ArgumentError

    other = method_reconstructor("tv:lam=0.02,iterations=20")
    with pytest.raises(ArgumentError) as refused:
        evaluate({"fbp_again": models["fbp"], "tv": other}, panel, tmp_path, progress=False)
    assert not (tmp_path / "cases" / "fbp_again").exists()  # refused before anything is written
    stored = json.loads((tmp_path / "cases" / "tv" / "model.json").read_text())
    assert stored == models["tv"].identity == {"model": "tv", "config": json.dumps(
        {"method": "tv", "params": {"lam": 0.01, "iterations": 20}}, sort_keys=True)}
    assert str(refused.value) == (
        f"{tmp_path / 'cases' / 'tv'}: expected cases of {json.dumps(other.identity, sort_keys=True)}, found cases "
        f"of {json.dumps(stored, sort_keys=True)}; write the report to a new --out, or delete that directory to "
        "evaluate the new model under this name")
    assert models["task"].identity["checkpoint_sha256"] == json.loads(
        (tmp_path / "cases" / "task" / "model.json").read_text())["checkpoint_sha256"]
    (tmp_path / "cases" / "fbp" / "model.json").unlink()  # cases written before model.json existed
    with pytest.raises(ArgumentError, match=r"found cases of an unrecorded model \(no model\.json\)"):
        evaluate({"fbp": models["fbp"]}, panel, tmp_path, progress=False)
    files_before.pop(tmp_path / "cases" / "fbp" / "model.json")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files_before  # nothing changed


def _check_html(path, summary: str, figures: int) -> list[tuple[int, int]]:
    """Parse the report: the summary first, its tables, and every figure embedded as a PNG that decodes.
    Returns the figures' (width, height) in pixels, in page order."""
    import base64
    import io
    from html.parser import HTMLParser

    from PIL import Image

    class Parser(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.tables, self.paragraph, self._in_summary = [], 0, "", False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.images += [attrs["src"]] if tag == "img" else []
            self.tables += tag == "table"
            self._in_summary = attrs.get("id") == "summary"

        def handle_data(self, data):
            if self._in_summary:
                self.paragraph += data

        def handle_endtag(self, tag):
            self._in_summary = False

    parser = Parser()
    parser.feed(path.read_text())
    assert parser.paragraph == summary and parser.tables >= 2 and len(parser.images) == figures
    sizes = []
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")  # self-contained: nothing to fetch
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        sizes.append(image.size)
        image.verify()
    return sizes


def test_evaluate_refuses_an_unverified_panel_and_no_models(panel, tmp_path):
    copy = tmp_path / "panel"
    shutil.copytree(panel, copy)
    (copy / "noise_2x.h5").write_bytes(b"x")
    with pytest.raises(PanelError, match=r"noise_2x: noise_2x.h5 has SHA-256"):
        evaluate({"fbp": method_reconstructor("fbp")}, copy, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match=r"^models: expected at least one reconstructor"):
        evaluate({}, panel, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_summary_names_where_a_model_must_not_be_used():
    row = {"psnr": (30.0, 29.0, 31.0), "psnr_gap": (0.0, -1.0, 1.0)}
    result = {"models": ["lpd", "fbp"], "baselines": ["fbp"],
              "conditions": [{"name": "in_distribution", "kind": "reference"}, {"name": "noise_2x", "kind": "shift"},
                             {"name": "angles_10", "kind": "shift"}, {"name": "small_features", "kind": "small_features"}],
              "rows": {"lpd": {"in_distribution": row, "noise_2x": {"psnr": (25.0, 24.5, 25.5),
                                                                     "psnr_gap": (5.0, 4.0, 6.0)},
                               "angles_10": {"psnr": (29.5, 29.0, 30.0), "psnr_gap": (0.5, -0.5, 1.5)},
                               "small_features": {"psnr": (20.0, 19.0, 21.0), "rose_detection": (0.4, 0.3, 0.5)}},
                       "fbp": {"in_distribution": {"psnr": (25.0, 24.0, 26.0)}, "noise_2x": {"psnr": (26.0, 25.0, 27.0)},
                               "angles_10": {"cases": 0, "error": "no"}, "small_features": {"psnr": (18.0, 17.0, 19.0)}}},
              "smallest": {"lpd": {"0.05": None, "0.1": 0.03}}}
    assert summary_paragraph(result).startswith(
        "lpd must not be used under noise_2x (-5.0 dB); it shows no loss of more than 1 dB under angles_10. Its "
        "PSNR is below that of the classical baseline fbp under noise_2x. Lesions detected in 90% of cases: radius "
        "0.03 at contrast 0.1 (none at contrast 0.05). Small high-contrast features found: 40%. fbp must not be "
        "used under angles_10 (cannot run: no)")


def test_known_limits_name_the_panel_and_each_blind_spot():
    from pirecon.evaluation.report import known_limits

    result = {"models": ["lpd", "fbp"], "baselines": ["fbp"], "panel": {"panel": "ct-v1", "small": False},
              "conditions": [{"name": "in_distribution", "kind": "reference", "description": "the protocol"},
                             {"name": "noise_4x", "kind": "shift", "description": "Gaussian noise of 20% (4x)"}],
              "rows": {"lpd": {"in_distribution": {"psnr": (30.0, 29.0, 31.0)},
                               "noise_4x": {"psnr": (22.0, 21.0, 23.0), "psnr_gap": (8.0, 7.0, 9.0)}},
                       "fbp": {"in_distribution": {"psnr": (25.0, 24.0, 26.0)},
                               "noise_4x": {"psnr": (23.0, 22.0, 24.0)}}},
              "smallest": {"lpd": {"0.05": None, "0.2": 0.03}}}
    assert known_limits(result, "lpd") == [
        "Panel ct-v1: not to be used under noise_4x (Gaussian noise of 20% (4x)): -8.0 dB",
        "Panel ct-v1: PSNR below that of the classical baseline fbp under noise_4x",
        "Panel ct-v1: no lesion size of the grid is detected in 90% of cases at contrast 0.05"]


def test_a_learned_model_below_the_best_baseline_is_marked_with_that_baselines_name():
    from pirecon.evaluation.report import known_limits

    def psnr(value):
        return {"psnr": (value, value - 0.5, value + 0.5)}

    result = {"models": ["varnet", "zero-filled", "tv"], "baselines": ["zero-filled", "tv"],
              "panel": {"panel": "mri-v1", "small": False},
              "conditions": [{"name": "in_distribution", "kind": "reference", "description": "the protocol"},
                             {"name": "coils_4", "kind": "shift", "description": "4 coils"},
                             {"name": "low_snr", "kind": "shift", "description": "10x the noise"}],
              "rows": {"varnet": {"in_distribution": psnr(27.0), "coils_4": psnr(26.0), "low_snr": psnr(27.0)},
                       "zero-filled": {"in_distribution": psnr(23.0), "coils_4": psnr(23.0), "low_snr": psnr(28.0)},
                       "tv": {"in_distribution": psnr(34.0), "coils_4": psnr(34.0),
                              "low_snr": {"cases": 0, "error": "no"}}},
              "smallest": {}}
    # above the zero-filled image in distribution and with 4 coils, but below TV: marked, with TV named
    assert below_baselines(result, "varnet") == {"in_distribution": "tv", "coils_4": "tv", "low_snr": "zero-filled"}
    assert below_baselines(result, "tv") == {}
    assert known_limits(result, "varnet") == ["Panel mri-v1: PSNR below that of the classical baseline tv under "
                                              "in_distribution, coils_4; zero-filled under low_snr"]
    assert summary_paragraph(result).startswith(
        "varnet shows no loss of more than 1 dB (95% interval) under any shift of the panel. Its PSNR is below that "
        "of the classical baseline tv under in_distribution, coils_4; zero-filled under low_snr.")


def test_a_lightning_checkpoint_is_named_after_its_run():
    from pirecon.evaluation.evaluate import checkpoint_name

    assert checkpoint_name("runs/ct_lpd/checkpoints/last.ckpt") == "ct_lpd"
    assert checkpoint_name("runs/ct_lpd/checkpoints/step=1000.ckpt") == "ct_lpd-step=1000"
    assert checkpoint_name("runs/ct_lpd/calibrated.ckpt") == "calibrated"


def test_the_cli_refuses_two_checkpoints_of_one_name(panel, task_checkpoint, tmp_path):
    paths = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        paths += ["--checkpoint", shutil.copy(task_checkpoint, tmp_path / run / "model.ckpt")]
    bad = subprocess.run([sys.executable, "-m", "pirecon.cli", "evaluate", *paths, "--panel", str(panel),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    assert bad.stderr.startswith("pirecon evaluate: error: --checkpoint: expected checkpoints of different names (the "
                                 "file's stem, or the run's directory for RUN/checkpoints/last.ckpt), found 'model' "
                                 "twice")
    assert not (tmp_path / "r").exists()


def test_the_cli_writes_the_limits_into_the_card_beside_a_checkpoint(panel, task_checkpoint, tmp_path):
    import pirecon.inference.card as cards

    directory = tmp_path / "model"
    directory.mkdir()
    checkpoint = shutil.copy(task_checkpoint, directory / "task.ckpt")
    data = {key: {} for key in cards.CARD_KEYS}
    data.update(card_format=cards.CARD_FORMAT, known_limits=[], model={"name": "TaskAdapted"})
    cards.ModelCard(data).write(directory)
    run = subprocess.run([sys.executable, "-m", "pirecon.cli", "evaluate", "--checkpoint", str(checkpoint),
                          "--panel", str(panel), "--out", str(tmp_path / "r"), "--quiet"], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    limits = json.loads((directory / "model_card.json").read_text())["known_limits"]
    assert limits and all(limit.startswith("Panel ct-v1 (small): ") for limit in limits)
    assert f"added {len(limits)} known limits to {directory / 'model_card.md'}" in run.stdout
    assert "## Known limits\n\n- Panel ct-v1 (small): " in (directory / "model_card.md").read_text()


def test_the_cli_evaluates_a_method_and_refuses_an_unknown_parameter(panel, tmp_path):
    run = subprocess.run([sys.executable, "-m", "pirecon.cli", "evaluate", "--method", "fbp", "--panel", str(panel),
                          "--out", str(tmp_path / "r"), "--quiet"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("fbp must not be used under ") and "wrote " in run.stdout
    bad = subprocess.run([sys.executable, "-m", "pirecon.cli", "evaluate", "--method", "tv:alpha=1", "--panel",
                          str(panel), "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith("pirecon evaluate: error: --param alpha: method 'tv' accepts ")
    assert np.all([not (tmp_path / "s").exists()])


def test_a_tuned_baseline_takes_the_best_validation_value_and_the_report_says_so(panel, tmp_path):
    from pirecon.evaluation import verify_panel
    from pirecon.evaluation.evaluate import TUNING_CASES, TUNING_GRIDS, tune_method, tuning_file
    from pirecon.errors import ArgumentError

    validation = tuning_file(verify_panel(panel), tmp_path)
    spec, record = tune_method("tv:lam=tuned,iterations=100", validation)
    scores = dict((value, score) for value, score in record["scores"])
    assert list(scores) == list(TUNING_GRIDS[("tv", "lam")]) and record["validation_cases"] == TUNING_CASES
    assert record["best"] == max(scores, key=scores.get)
    assert spec == f"tv:lam={record['best']:.4g},iterations=100"
    assert min(scores.values()) < scores[record["best"]] - 1.0  # the grid spans values that matter
    assert tune_method("tv:lam=0.1", validation) == ("tv:lam=0.1", {})
    with pytest.raises(ArgumentError, match=r"^--method tv:iterations=tuned: expected one tuned parameter among "
                                            r"tv:lam=tuned, fbp:filter=tuned, found tv:iterations=tuned$"):
        tune_method("tv:iterations=tuned", validation)
    run = subprocess.run([sys.executable, "-m", "pirecon.cli", "evaluate", "--method", "fbp:filter=tuned", "--panel",
                          str(panel), "--out", str(tmp_path / "r"), "--quiet"], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    (name, tuned), = metrics["tuning"].items()
    assert name == f"fbp:filter={tuned['best']}" and metrics["baselines"] == [name] == metrics["models"]
    assert f"{name}: filter chosen by mean PSNR on 16 validation slices among 5 values" in run.stdout
    assert (f"{name}: filter chosen by mean PSNR on 16 in-distribution slices of the validation split among "
            "ram-lak, shepp-logan, cosine, hamming, hann.") in (tmp_path / "r" / "report.md").read_text()


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
FIGURE_PROBE = """<pre id="figures-loaded"></pre><script>
window.addEventListener("load", () => {
  document.getElementById("figures-loaded").textContent = JSON.stringify(Array.from(document.images,
    image => image.complete ? [image.naturalWidth, image.naturalHeight] : null));
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine (Debian: apt install chromium)")
def test_the_report_renders_in_headless_chromium_with_every_figure_decoded(panel, tmp_path):
    """Chromium loads report.html from disk with the network off; each figure decodes at its PNG's own size."""
    import re

    from PIL import Image

    result = evaluate({"fbp": method_reconstructor("fbp")}, panel, tmp_path / "report", progress=False)
    embedded = _check_html(tmp_path / "report" / "report.html", summary_paragraph(result), figures=2)
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("</body>") == 1
    probe = tmp_path / "probe.html"  # the report with a script that lists what the browser decoded
    probe.write_text(page.replace("</body>", FIGURE_PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=180)
    loaded = json.loads(re.search(r'<pre id="figures-loaded">(.*?)</pre>', dom.stdout, re.S).group(1))
    assert loaded == [list(size) for size in embedded]  # the blind-spot map and the gallery
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,2400", f"--screenshot={shot}", (tmp_path / "report" /
                    "report.html").as_uri()], capture_output=True, timeout=180, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280) and pixels.std() > 10  # a page with text and figures, not a blank one
