"""The model card that ``pirecon fit`` and ``fit_on_simulation`` write beside their checkpoints."""

import csv
import json
import math
import platform
import shutil
from datetime import datetime, timezone

import pytest
import pytorch_lightning as pl
import torch

import pirecon
from pirecon.data.simulate import simulate
from pirecon.errors import PireconUserError
from pirecon.inference.card import ModelCard, add_known_limits, plain_data
from pirecon.inference.checkpoint import file_sha256
from pirecon.models.registry import build_model
from pirecon.training.datamodule import ReconstructionDataModule
from pirecon.training.fit import fit_on_simulation
from pirecon.training.module import load_module

TINY_LPD = {"class_path": "lpd", "init_args": {"iterations": 2, "hidden": 8}}
CT_SIM = {"modality": "ct", "phantom": "ellipses", "image_size": 32, "num_angles": 10, "seed": 0}
SECTIONS = ("## Model", "## Physics", "## Training data", "## Schedule and training time", "## Metrics",
            "## Versions", "## Known limits")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny LPD trained 4 steps on simulated CT by ``fit_on_simulation``: (checkpoint directory, val file, root)."""
    root = tmp_path_factory.mktemp("card")
    val = simulate(root / "val.h5", n=4, progress=False, **dict(CT_SIM, seed=1))
    last = fit_on_simulation(root / "out", val, model=TINY_LPD, simulation=CT_SIM, steps=4, lr=1e-2,
                             batch_size=2, progress=False)
    return last.parent, val, root / "out" / "training"


def _card(directory) -> dict:
    return json.loads((directory / "model_card.json").read_text())


def _last_logged(metrics_csv, key: str) -> float:
    rows = [r for r in csv.DictReader(metrics_csv.open()) if r.get(key)]
    return float(rows[-1][key])


def test_the_card_is_written_beside_the_checkpoints_with_the_run_values(fitted):
    directory, val, root = fitted
    assert (directory / "last.ckpt").is_file()
    assert (directory / "model_card.md").is_file() and (directory / "model_card.json").is_file()
    card = _card(directory)

    assert card["card_format"] == 1
    assert card["model"]["class"] == "LearnedPrimalDual"
    assert card["model"]["spec"] == TINY_LPD
    assert card["model"]["parameters"] == sum(p.numel() for p in build_model(TINY_LPD).parameters())

    module = load_module(directory / "last.ckpt")
    stored = module.batch_physics.description()
    assert card["physics"]["geometry"] == stored["geometry"]
    assert card["physics"]["noise"] == stored["noise"] and card["physics"]["modality"] == "ct"
    _, geometry, _ = ReconstructionDataModule(simulation=CT_SIM).physics_description()
    assert card["physics"]["geometry"] == geometry.to_dict()
    assert card["physics"]["description"].startswith("CT parallel beam 10 angles x 47 detectors")

    data = card["training_data"]
    assert data["source"] == "simulation" and data["train"]["stream"] is True
    assert data["train"]["protocol"] == {"modality": "ct", "phantom": "ellipses", "seed": 0, "image_size": 32,
                                         "num_angles": 10}
    assert data["validation"]["files"] == [{"path": str(val), "sha256": file_sha256(val)}]

    schedule = card["schedule"]
    assert schedule["optimizer"] == "Adam" and schedule["lr"] == 1e-2 and schedule["betas"] == [0.9, 0.99]
    assert schedule["schedule"] == "cosine" and schedule["weight_decay"] == 0.0
    assert schedule["max_steps"] == 4 and schedule["batch_size"] == 2 and schedule["precision"] == "32-true"
    assert schedule["accumulate_grad_batches"] == 1 and schedule["gradient_clip_val"] == 1.0
    assert schedule["loss"] == {"mse": 1.0, "l1": 0.0, "ssim": 0.0}

    training = card["training"]
    assert training["steps"] == 4 and training["resumed_from"] is None
    started, finished = (datetime.fromisoformat(training[k]) for k in ("started", "finished"))
    assert started.tzinfo == timezone.utc and started <= finished
    assert 0 < training["seconds"] <= (finished - started).total_seconds() + 1

    validation = card["metrics"]["validation"]
    assert set(validation) == {"psnr", "ssim", "nmse", "loss"}
    for name in validation:  # the values the trainer logged, exactly
        assert validation[name] == _last_logged(root / "metrics.csv", f"val/{name}"), name
    assert card["metrics"]["validation_step"] == 4 and "test" not in card["metrics"]

    assert card["versions"] == {"pirecon": pirecon.__version__, "torch": str(torch.__version__),
                                "lightning": pl.__version__, "python": platform.python_version()}
    assert card["checkpoints"]["last"] == {"file": "last.ckpt", "sha256": file_sha256(directory / "last.ckpt")}
    assert card["checkpoints"]["best"] is None  # fit_on_simulation monitors no metric
    assert card["known_limits"] == []


def test_every_checkpoint_carries_its_card_as_plain_data(fitted):
    directory, _, _ = fitted
    card = _card(directory)
    for path in directory.glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)  # nothing but plain data inside
        embedded = checkpoint["pirecon_card"]
        assert embedded["model"] == card["model"] and embedded["physics"] == card["physics"]
        assert embedded["training"]["steps"] == checkpoint["global_step"]
        assert embedded["training"]["finished"] is None
        assert "sha256" not in embedded["checkpoints"]["last"]  # a file cannot hold its own digest
        assert json.loads(json.dumps(embedded)) == embedded


def test_summary_and_markdown(fitted):
    directory, _, _ = fitted
    card = ModelCard.read(directory)
    assert card == ModelCard.read(directory / "model_card.json") == ModelCard.read(directory / "model_card.md")
    assert card.model_name == "LearnedPrimalDual" and card.model["class"] == "LearnedPrimalDual"
    assert card.steps == 4 and card.validation_psnr == card.metrics["validation"]["psnr"]

    summary = card.summary()
    parameters = card.parameters
    assert "\n" not in summary
    assert summary == (f"LearnedPrimalDual ({parameters:,} parameters), CT parallel beam 10 angles x 47 detectors, "
                       f"trained 4 steps on ellipses CT simulation (seed 0); validation PSNR "
                       f"{card.validation_psnr:.1f} dB")

    markdown = (directory / "model_card.md").read_text()
    assert markdown == card.to_markdown() and markdown.startswith("# Model card: LearnedPrimalDual\n")
    lines = markdown.splitlines()
    positions = [lines.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert f"| PSNR (dB) | {card.validation_psnr:.5g} |" in lines
    assert "No evaluation has run yet: " in markdown
    assert f"`last.ckpt`, SHA-256 `{file_sha256(directory / 'last.ckpt')}`" in markdown
    assert json.loads(card.to_json()) == card.data


def test_add_known_limits_updates_both_files(fitted, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(fitted[0], directory)
    limits = ["Streaks at 10 angles", "Not trained on metal implants"]
    card = add_known_limits(directory, limits, metrics={"evaluation": {"psnr": 30.5, "ssim": 0.8}})
    assert card.known_limits == limits
    stored = _card(directory)
    assert stored["known_limits"] == limits and stored["metrics"]["evaluation"] == {"psnr": 30.5, "ssim": 0.8}
    assert stored["metrics"]["validation"] == _card(fitted[0])["metrics"]["validation"]  # kept
    markdown = (directory / "model_card.md").read_text()
    assert "- Streaks at 10 angles\n- Not trained on metal implants\n" in markdown
    assert "No evaluation has run yet" not in markdown
    assert "| Metric | Validation | Evaluation |" in markdown

    add_known_limits(directory / "model_card.json", ["Not trained on metal implants", "Slow on CPU"])
    assert _card(directory)["known_limits"] == limits + ["Slow on CPU"]  # appended, never repeated
    with pytest.raises(PireconUserError) as info:
        add_known_limits(directory, "Slow")
    assert str(info.value) == "limits: expected a list of non-empty strings, found 'Slow'"


def test_reading_a_missing_or_malformed_card_says_what_was_expected(tmp_path):
    with pytest.raises(PireconUserError) as info:
        ModelCard.read(tmp_path)
    assert str(info.value) == (f"model card: expected a model_card.json written by pirecon fit, found no file at "
                               f"{str(tmp_path / 'model_card.json')!r}")

    path = tmp_path / "model_card.json"
    path.write_text('{"model": ')
    with pytest.raises(PireconUserError) as info:
        ModelCard.read(path)
    assert str(info.value) == (f"{path}: expected a model card in JSON, found invalid JSON "
                               f"(Expecting value at line 1 column 11)")

    path.write_text("[1, 2]")
    with pytest.raises(PireconUserError) as info:
        ModelCard.read(path)
    assert str(info.value) == (f"{path}: expected a model card (a JSON object with the keys card_format, model, "
                               f"physics, training_data, schedule, training, metrics, versions, checkpoints, "
                               f"known_limits), found a JSON array")

    path.write_text('{"card_format": 1, "model": {}}')
    with pytest.raises(PireconUserError) as info:
        add_known_limits(tmp_path, ["x"])
    assert str(info.value) == (f"{path}: expected a model card with the keys card_format, model, physics, "
                               f"training_data, schedule, training, metrics, versions, checkpoints, known_limits, "
                               f"found no physics, training_data, schedule, training, metrics, versions, "
                               f"checkpoints, known_limits")


def test_plain_data_holds_nothing_that_needs_unpickling():
    value = {"v": torch.__version__, "t": (1, 2.5), "nan": math.nan, "x": torch.tensor(3.0), 4: {"s": {2, 1}}}
    plain = plain_data(value)
    assert plain == {"v": str(torch.__version__), "t": [1, 2.5], "nan": None, "x": 3.0, "4": {"s": [1, 2]}}
    assert type(plain["v"]) is str


def test_pirecon_fit_then_test_completes_the_card(tmp_path):
    """In process, through LightningCLI: the best and last checkpoints are named with their digests, and
    ``pirecon test`` adds the test metrics of the checkpoint it tested."""
    from pirecon.cli import main

    from test_training_cli import tiny_config

    root = tmp_path / "run"
    path = tiny_config(root, max_steps=4, val_check_interval=2, limit_val_batches=1)
    assert main(["fit", "--config", str(path)]) == 0
    directory = root / "checkpoints"
    card = _card(directory)
    best = card["checkpoints"]["best"]
    assert best["monitor"] == "val/psnr" and best["mode"] == "max" and (directory / best["file"]).is_file()
    assert best["sha256"] == file_sha256(directory / best["file"])
    assert best["score"] == pytest.approx(max(float(r["val/psnr"]) for r in csv.DictReader(
        (root / "metrics.csv").open()) if r.get("val/psnr")))
    assert card["checkpoints"]["last"]["sha256"] == file_sha256(directory / "last.ckpt")
    assert card["schedule"]["schedule"] == "cosine" and card["training"]["steps"] == 4
    assert card["training_data"]["train"]["samples_per_epoch"] == 200
    assert card["training_data"]["validation"]["simulation"]["split"] == "validation"

    test_file = simulate(tmp_path / "test.h5", modality="ct", image_size=32, num_angles=10, n=2, seed=5,
                         progress=False)
    assert main(["test", "--config", str(path), "--ckpt_path", str(directory / "last.ckpt"),
                 "--data.test", str(test_file)]) == 0
    tested = _card(directory)
    assert set(tested["metrics"]["test"]) == {"psnr", "ssim", "nmse", "loss"}
    assert tested["metrics"]["test_checkpoint"] == "last.ckpt"
    assert tested["metrics"]["validation"] == card["metrics"]["validation"]
    assert "| PSNR (dB) | " in (directory / "model_card.md").read_text()
    assert "| Metric | Validation | Test |" in (directory / "model_card.md").read_text()
    assert "test PSNR" in ModelCard.read(directory).summary()


def test_a_resumed_run_keeps_its_start_and_adds_up_its_training_time(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from pirecon.training.card import ModelCardWriter
    from pirecon.training.module import ReconstructionModule

    def run(steps, ckpt_path=None):
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                             callbacks=[ModelCheckpoint(tmp_path / "ckpt", save_last=True), ModelCardWriter()])
        module = ReconstructionModule(TINY_LPD, schedule="constant", log_images_every_n_epochs=0)
        trainer.fit(module, datamodule=ReconstructionDataModule(simulation=CT_SIM, batch_size=2), ckpt_path=ckpt_path)
        return _card(tmp_path / "ckpt")

    first = run(2)
    assert first["training"]["steps"] == 2 and first["metrics"]["validation"] == {}
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["pirecon_card"]["training"]["seconds"]
    resumed = run(4, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert resumed["training"]["steps"] == 4 and resumed["training"]["resumed_from"] == "last.ckpt"
    assert resumed["training"]["started"] == first["training"]["started"]
    assert resumed["training"]["seconds"] > saved > 0  # the first session's time, plus the second's
    assert resumed["training"]["finished"] >= first["training"]["finished"]
