"""``pirecon fit|validate|test|predict`` end to end in subprocesses: resume after SIGKILL, DDP on two
CPU processes, predictions on disk, one-line errors, and the experiment configs."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from pirecon.data.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def tiny_config(root: Path, **trainer) -> Path:
    """A run of a few steps of a tiny LPD on 32 x 32 simulated CT data, logging to ``root``."""
    config = {
        "seed_everything": 3,
        "trainer": {"max_steps": 8, "accelerator": "cpu", "devices": 1, "val_check_interval": 4,
                    "check_val_every_n_epoch": None, "limit_val_batches": 2, "enable_model_summary": False,
                    "enable_progress_bar": False, "default_root_dir": str(root),
                    "logger": [{"class_path": "pytorch_lightning.loggers.CSVLogger",
                                "init_args": {"save_dir": str(root), "name": "", "version": ""}}]},
        "model": {"model": {"class_path": "lpd", "init_args": {"iterations": 2, "hidden": 8}}, "lr": 0.01,
                  "log_images_every_n_epochs": 0},
        "data": {"simulation": {"modality": "ct", "phantom": "ellipses", "image_size": 32, "num_angles": 10,
                                "seed": 0, "length": 200},
                 "val_simulation": {"out": str(root.parent / "val.h5"), "n": 4}, "batch_size": 2},
        "last_checkpoint": {"every_n_train_steps": 1},
    }
    config["trainer"].update(trainer)
    path = root.parent / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pirecon(*args, cwd=None, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "pirecon.cli", *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"pirecon {args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def last_row(metrics: Path) -> dict:
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("val/psnr")]
    return rows[-1]


def test_fit_test_predict(tmp_path):
    config = tiny_config(tmp_path / "run")
    pirecon("fit", "--config", config)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    best = sorted(checkpoints.glob("best-*.ckpt"))
    assert len(best) == 1  # the best validation PSNR only
    assert float(last_row(tmp_path / "run" / "metrics.csv")["val/psnr"]) > 0
    ckpt = torch.load(checkpoints / "last.ckpt", weights_only=True)  # nothing but plain data inside
    assert ckpt["global_step"] == 8 and ckpt["pirecon_physics"]["modality"] == "ct"

    test_file = simulate(tmp_path / "test.h5", modality="ct", image_size=32, num_angles=10, n=3, seed=5,
                         progress=False)
    result = pirecon("test", "--config", config, "--ckpt_path", checkpoints / "last.ckpt", "--data.test", test_file)
    assert "test/psnr" in result.stdout

    out = tmp_path / "recon"
    pirecon("predict", "--config", config, "--ckpt_path", checkpoints / "last.ckpt", "--data.predict", test_file,
            "--writer.output_dir", out)
    from pirecon.data.formats import read_reconstruction

    recon = read_reconstruction(out / "test_LearnedPrimalDual.h5")
    assert recon.image.shape == (3, 32, 32)
    assert len(recon.provenance["checkpoint_sha256"]) == 64


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    uninterrupted = tmp_path / "a"
    pirecon("fit", "--config", tiny_config(uninterrupted, max_steps=12, val_check_interval=6))
    expected = last_row(uninterrupted / "metrics.csv")
    assert expected["step"] == "11"

    killed = tmp_path / "b"
    config = tiny_config(killed, max_steps=12, val_check_interval=6)
    process = subprocess.Popen([sys.executable, "-m", "pirecon.cli", "fit", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    step, deadline = 0, time.monotonic() + 300
    while step < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if last.is_file():
            try:
                step = torch.load(last, weights_only=True)["global_step"]
            except Exception:  # replaced while reading: try again
                step = 0
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed, not finished
    resumed_from = torch.load(last, weights_only=True)["global_step"]
    assert 3 <= resumed_from < 12
    pirecon("fit", "--config", config, "--ckpt_path", last)
    found = last_row(killed / "metrics.csv")
    assert found["step"] == expected["step"]
    for key in ("val/psnr", "val/ssim", "val/nmse", "val/loss"):
        assert float(found[key]) == pytest.approx(float(expected[key]), rel=1e-6), key


PROBE = textwrap.dedent('''
    import json, os
    from pathlib import Path
    import pytorch_lightning as pl

    class RecordIndices(pl.Callback):
        def __init__(self, out: str):
            self.out = out
            self.indices = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.indices += batch["index"].tolist()

        def on_train_end(self, trainer, pl_module):
            path = Path(self.out) / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps({"world_size": trainer.world_size, "indices": self.indices}))
''')


def test_ddp_on_two_cpu_processes_gives_each_rank_distinct_data(tmp_path):
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    config = tiny_config(tmp_path / "run", max_steps=3, limit_val_batches=1, val_check_interval=3)
    data = yaml.safe_load(config.read_text())
    data["trainer"]["callbacks"] = [{"class_path": "ddp_probe.RecordIndices", "init_args": {"out": str(tmp_path)}}]
    config.write_text(yaml.safe_dump(data))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    pirecon("fit", "--config", config, "--trainer.strategy", "ddp", "--trainer.devices", "2",
            "--trainer.accelerator", "cpu", env=env)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 for r in ranks)
    first, second = (set(r["indices"]) for r in ranks)
    assert len(first) == len(second) == 3 * 2  # 3 steps of batch 2 on each rank
    assert not first & second
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_model_is_one_line(tmp_path):
    config = tiny_config(tmp_path / "run")
    data = yaml.safe_load(config.read_text())
    data["model"]["model"]["class_path"] = "learned_primal_dual"
    config.write_text(yaml.safe_dump(data))
    line = one_line_error(pirecon("fit", "--config", config, check=False))
    from pirecon.models import MODELS

    assert line == (f"pirecon fit: error: {config}: model.model.class_path: expected one of "
                    f"{', '.join(sorted(MODELS))} (or a pirecon.models class name), or an importable torch.nn.Module "
                    "subclass, found 'learned_primal_dual'")


def test_missing_data_path_is_one_line(tmp_path):
    config = tiny_config(tmp_path / "run")
    data = yaml.safe_load(config.read_text())
    data["data"] = {"train": str(tmp_path / "nowhere.h5"), "batch_size": 2}
    config.write_text(yaml.safe_dump(data))
    line = one_line_error(pirecon("fit", "--config", config, check=False))
    assert line == (f"pirecon fit: error: {config}: data.train: expected an existing HDF5 file, "
                     f"found no file at {str(tmp_path / 'nowhere.h5')!r}")


def test_missing_config_is_one_line(tmp_path):
    line = one_line_error(pirecon("fit", "--config", tmp_path / "none.yaml", check=False))
    assert line == f"pirecon fit: error: --config: expected an existing YAML file, found no file at " \
                   f"{str(tmp_path / 'none.yaml')!r}"


def test_corrupt_checkpoint_is_one_line(tmp_path):
    config = tiny_config(tmp_path / "run")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 100)
    result = pirecon("validate", "--config", config, "--ckpt_path", bad, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # Lightning's own start-up lines come first; the error is the last line
    assert result.stderr.strip().splitlines()[-1] == (
        f"pirecon validate: error: {bad}: expected a PyTorch checkpoint (zip file of tensors), found a corrupt or "
        "truncated file (not a readable zip archive)")


def test_validate_with_a_file_still_checks_the_spec(tmp_path):
    path = simulate(tmp_path / "x.h5", modality="ct", image_size=32, num_angles=10, n=1, progress=False)
    assert pirecon("validate", path).stdout.strip() == f"OK {path}: ct_raw, 1 slices"
    assert pirecon("check", path).stdout.strip() == f"OK {path}: ct_raw, 1 slices"


@pytest.mark.parametrize("config", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_experiment_configs_build(config):
    """Every experiment's model and loss build; simulated data configs build their datamodule too."""
    from pirecon.training.datamodule import ReconstructionDataModule
    from pirecon.training import ReconstructionModule

    data = yaml.safe_load(config.read_text())
    module = ReconstructionModule(**data["model"])
    assert sum(p.numel() for p in module.parameters()) > 0
    assert data["trainer"].get("gradient_clip_val") == 1.0
    if "simulation" in data["data"]:
        dm = ReconstructionDataModule(**data["data"])
        modality, geometry, _ = dm.physics_description()
        assert modality == data["data"]["simulation"]["modality"]


def test_a_bug_during_training_keeps_its_traceback(tmp_path, monkeypatch):
    """In process: a plain ValueError deep inside a run is a bug, not a user error (no exit 2)."""
    from pirecon.cli import main
    from pirecon.training.module import ReconstructionModule

    def broken(self, batch, batch_idx):
        raise ValueError("a bug deep inside")

    monkeypatch.setattr(ReconstructionModule, "training_step", broken)
    with pytest.raises(ValueError, match="^a bug deep inside$"):
        main(["fit", "--config", str(tiny_config(tmp_path / "run"))])


def test_a_bug_exits_1_with_a_traceback(tmp_path):
    config = tiny_config(tmp_path / "run")
    script = textwrap.dedent(f'''
        import sys
        from pirecon.training import checkpoints

        def broken(*args, **kwargs):
            raise ValueError("a bug deep inside")

        checkpoints.use_atomic_checkpoints = broken  # called on the trainer LightningCLI builds
        from pirecon.cli import main
        sys.exit(main(["fit", "--config", {str(config)!r}]))
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and result.stderr.strip().endswith("ValueError: a bug deep inside")


def test_missing_data_option_is_one_line(tmp_path, capsys):
    from pirecon.cli import main

    config = tiny_config(tmp_path / "run")
    missing = tmp_path / "nowhere.h5"
    assert main(["test", "--config", str(config), "--data.test", str(missing)]) == 2
    assert capsys.readouterr().err == (f"pirecon test: error: --data.test: expected an existing HDF5 file, "
                                       f"found no file at {str(missing)!r}\n")
    assert main(["test", "--config", str(config), f"--data.test=[{tmp_path / 'none*.h5'}]"]) == 2
    assert capsys.readouterr().err == (f"pirecon test: error: --data.test: expected files matching the pattern "
                                       f"{str(tmp_path / 'none*.h5')!r}, found none\n")


def test_config_errors_are_config_errors(tmp_path):
    from pirecon.errors import ConfigError
    from pirecon.training.cli import check_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: expected YAML, found a syntax error"):
        check_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: expected a mapping of sections"):
        check_config(bad)
    with pytest.raises(ConfigError, match=r"^--config: expected an existing YAML file"):
        check_config(tmp_path / "none.yaml")


def test_fit_ensemble_trains_k_seeded_members_and_combines_them(tmp_path):
    import pirecon as package

    config = tiny_config(tmp_path / "run", max_steps=4)
    text = yaml.safe_load(config.read_text())
    text["model"]["model"] = {"class_path": "gaussian_head", "init_args": {"backbone": text["model"]["model"]}}
    config.write_text(yaml.safe_dump(text))
    result = pirecon("fit", "--config", config, "--ensemble", "2")
    ensemble = tmp_path / "run" / "ensemble.ckpt"
    assert result.stdout.strip().startswith(f"wrote {ensemble}: a deep ensemble of 2 members")
    seeds, weights = [], []
    for k in (0, 1):
        member = tmp_path / "run" / f"member_{k}"
        assert (member / "checkpoints" / "last.ckpt").is_file() and (member / "metrics.csv").is_file()
        seeds.append(yaml.safe_load((member / "config.yaml").read_text())["seed_everything"])
        weights.append(torch.load(member / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert seeds == [3, 4]
    assert weights[0].keys() == weights[1].keys()
    assert not all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])  # other seeds
    test = simulate(tmp_path / "test.h5", n=2, progress=False, split="test", modality="ct", phantom="ellipses",
                    image_size=32, num_angles=10, seed=0)
    interval = package.load(ensemble).reconstruct(test, progress=False).uncertainty
    assert interval.kind == "ensemble" and set(interval.parts) == {"aleatoric_std", "epistemic_std"}
    bad = pirecon("fit", "--config", config, "--ensemble", "1", check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "pirecon fit: error: --ensemble: expected an integer K >= 2 (members to train), found '1'"
