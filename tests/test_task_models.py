"""Task heads and task-adapted reconstruction: shapes, gradients, the training modes, and the door out."""

import pytest
import pytorch_lightning as pl
import torch

from pirecon.data.acquisition import read_acquisition
from pirecon.data.simulate import simulate
from pirecon.models import TaskAdapted
from pirecon.models.task_heads import soft_dice_loss

TINY_LPD = {"class_path": "lpd", "init_args": {"iterations": 2, "hidden": 8}}
LESIONS = {"modality": "ct", "phantom": "lesions", "image_size": 32, "num_angles": 10, "seed": 0,
           "lesion_options": {"radius_range": (0.1, 0.2), "contrast": 0.3}}
HEADS = {"segmentation": {"channels": 4, "depth": 2}, "classification": {"channels": 4, "depth": 2}}


@pytest.fixture(scope="module")
def lesion_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesions")
    return {split: simulate(root / f"{split}.h5", n=n, progress=False, split=split, **LESIONS)
            for split, n in (("train", 8), ("validation", 4), ("test", 4))}


@pytest.fixture(scope="module")
def batch(lesion_files):
    acquisition = read_acquisition(lesion_files["train"])
    return acquisition


def _targets(lesion_files):
    import h5py

    with h5py.File(lesion_files["train"], "r") as f:
        return torch.from_numpy(f["segmentation"][()][:, None]), torch.from_numpy(f["labels"][()])


def test_soft_dice_loss_on_known_masks():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2] = 1
    assert float(soft_dice_loss(mask, mask)) == pytest.approx(0.0)
    other = torch.zeros_like(mask)
    other[0, 0, 2:] = 1
    # image 0: no overlap, 1 - 1/17; image 1: both empty, 0
    assert float(soft_dice_loss(other, mask)) == pytest.approx((1 - 1 / 17) / 2)


def test_task_outputs_shapes_and_joint_gradients_reach_the_backbone(batch, lesion_files):
    torch.manual_seed(0)
    model = TaskAdapted(TINY_LPD, **HEADS, task_weight=0.5)
    result = model(batch.y, batch.physics)
    n = batch.y.shape[0]
    assert result.task["segmentation"].shape == (n, 1, 32, 32) and result.task["label"].shape == (n,)
    assert 0 <= float(result.task["segmentation"].detach().min()) and float(result.task["label"].detach().max()) <= 1
    segmentation, labels = _targets(lesion_files)
    assert int(labels.sum()) not in (0, n)  # both classes in the file
    model.task_loss(result, segmentation, labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.reconstruction.parameters()
               if p.requires_grad)
    assert model.segmentation.unet.out.weight.grad.abs().sum() > 0
    assert model.classification.linear.weight.grad.abs().sum() > 0


def test_a_frozen_backbone_gets_no_gradient_and_the_oracle_needs_the_truth(batch, lesion_files):
    segmentation, labels = _targets(lesion_files)
    model = TaskAdapted(TINY_LPD, **HEADS, freeze_reconstruction=True).train()
    assert not model.reconstruction.training
    result = model(batch.y, batch.physics)
    model.task_loss(result, segmentation, labels).backward()
    assert all(p.grad is None for p in model.reconstruction.parameters())
    oracle = TaskAdapted(TINY_LPD, **HEADS, task_input="truth")
    with pytest.raises(ValueError, match=r"^TaskAdapted: expected truth= for task_input='truth'"):
        oracle(batch.y, batch.physics)
    on_truth = oracle(batch.y, batch.physics, truth=batch.ground_truth)
    again = oracle.segmentation(batch.ground_truth.float())
    torch.testing.assert_close(on_truth.task["segmentation_logit"], again)
    fbp = TaskAdapted({"class_path": "classical"}, **HEADS)
    assert sum(p.numel() for p in fbp.reconstruction.parameters()) == 0
    with pytest.raises(ValueError, match=r"^TaskAdapted: expected segmentation targets"):
        model.task_loss(result, None, labels)


def test_the_heads_can_read_the_interval_width(batch):
    quantile = {"class_path": "quantile_head", "init_args": {"backbone": TINY_LPD}}
    model = TaskAdapted(quantile, **HEADS, use_uncertainty=True)
    assert model.segmentation.unet.down[0][0].in_channels == 2
    assert model(batch.y, batch.physics).task["label"].shape == (batch.y.shape[0],)
    with pytest.raises(ValueError, match=r"^TaskAdapted: expected an interval from the reconstruction"):
        TaskAdapted(TINY_LPD, **HEADS, use_uncertainty=True)(batch.y, batch.physics)
    with pytest.raises(ValueError, match=r"^task_weight: expected C in \[0, 1\], found 1.5$"):
        TaskAdapted(TINY_LPD, task_weight=1.5)


def _fit(module, lesion_files, tmp_path, steps=6):
    from pirecon.training import ReconstructionDataModule

    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, val_check_interval=steps, check_val_every_n_epoch=None)
    trainer.fit(module, datamodule=ReconstructionDataModule(train=str(lesion_files["train"]),
                                                            val=str(lesion_files["validation"]), batch_size=4))
    return trainer


def test_joint_training_logs_the_task_and_sequential_training_keeps_the_pretrained_backbone(lesion_files, tmp_path):
    import pirecon
    from pirecon.training import ReconstructionModule

    pl.seed_everything(0, verbose=False)
    plain = ReconstructionModule(TINY_LPD, log_images_every_n_epochs=0)
    trainer = _fit(plain, lesion_files, tmp_path / "plain")
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    joint = ReconstructionModule({"class_path": "task_adapted", "init_args": {"reconstruction": TINY_LPD, **HEADS,
                                                                             "task_weight": 0.5}},
                                 log_images_every_n_epochs=0)
    metrics = _fit(joint, lesion_files, tmp_path / "joint").callback_metrics
    assert {"train/task_loss", "val/task_loss", "val/dice", "val/label_accuracy", "val/psnr"} <= set(metrics)
    assert 0 <= float(metrics["val/dice"]) <= 1
    sequential = ReconstructionModule(
        {"class_path": "task_adapted", "init_args": {"reconstruction": TINY_LPD, **HEADS,
                                                    "freeze_reconstruction": True}},
        pretrained_reconstruction=str(tmp_path / "plain.ckpt"), log_images_every_n_epochs=0)
    trainer = _fit(sequential, lesion_files, tmp_path / "sequential")
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(sequential.model.reconstruction.state_dict()[name], value)
    trainer.save_checkpoint(tmp_path / "sequential.ckpt")
    recon = pirecon.load(tmp_path / "sequential.ckpt").reconstruct(lesion_files["test"], progress=False)
    assert recon.task["segmentation"].shape == (4, 1, 32, 32) and recon.task["label"].shape == (4,)
    with pytest.raises(ValueError, match=r"^pretrained_reconstruction: expected a task-adapted model"):
        ReconstructionModule(TINY_LPD, pretrained_reconstruction=str(tmp_path / "plain.ckpt"))


def test_fit_on_simulation_resumes_from_its_last_checkpoint_and_starts_the_backbone_pretrained(lesion_files, tmp_path):
    from pirecon.training.fit import fit_on_simulation

    options = {"model": TINY_LPD, "simulation": LESIONS, "lr": 1e-3, "batch_size": 2, "progress": False}
    first = fit_on_simulation(tmp_path / "plain", lesion_files["validation"], steps=4, **options)
    assert torch.load(first, weights_only=True)["global_step"] == 4
    resumed = fit_on_simulation(tmp_path / "plain", lesion_files["validation"], steps=6, resume=True, **options)
    stored = torch.load(resumed, weights_only=True)
    assert stored["global_step"] == 6  # 2 more steps from step 4, not 6 from the start
    task = {"class_path": "task_adapted", "init_args": {"reconstruction": TINY_LPD, **HEADS, "task_weight": 0.5}}
    joint = fit_on_simulation(tmp_path / "joint", lesion_files["validation"], steps=1, pretrained_reconstruction=first,
                              **{**options, "model": task, "lr": 1e-12})
    start = torch.load(first, weights_only=True)["state_dict"]
    after = torch.load(joint, weights_only=True)["state_dict"]
    for key, value in start.items():  # a learning rate of 1e-12: one step leaves the pretrained weights
        torch.testing.assert_close(after[key.replace("model.", "model.reconstruction.", 1)], value, rtol=0, atol=1e-6)
    balanced = fit_on_simulation(tmp_path / "balanced", lesion_files["validation"], steps=2,
                                 pretrained_reconstruction=first, reconstruction_lr=1e-4, balance_task_loss=True,
                                 **{**options, "model": task})
    assert bool((torch.load(balanced, weights_only=True)["state_dict"]["task_loss_means"] > 0).all())


@pytest.mark.filterwarnings("ignore:.*no patient:UserWarning")
def test_task_outputs_are_written_as_a_label_map_and_label_probabilities(lesion_files, tmp_path):
    import json

    import nibabel
    import numpy as np

    import pirecon
    from pirecon.data import read_reconstruction
    from pirecon.data.readers import read_nifti
    from pirecon.training import ReconstructionModule

    module = ReconstructionModule({"class_path": "task_adapted", "init_args": {"reconstruction": TINY_LPD, **HEADS}})
    physics = read_acquisition(lesion_files["test"]).physics
    module.set_physics("ct", physics.metadata["geometry"], physics.noise)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "task.ckpt")
    recon = pirecon.load(tmp_path / "task.ckpt").reconstruct(lesion_files["test"], progress=False)
    recon.task["segmentation"][0, 0, :4, :4] = 0.9  # some foreground to see in the label map
    expected = (recon.task["segmentation"][:, 0] > 0.5).numpy().astype(np.uint8)
    written = read_reconstruction(pirecon.save(recon, tmp_path / "r.h5"))
    np.testing.assert_array_equal(written.task["label"], recon.task["label"].numpy())
    pirecon.save(recon, tmp_path / "r.nii.gz")
    labels = nibabel.load(tmp_path / "r_segmentation.nii.gz")
    assert labels.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(read_nifti(tmp_path / "r_segmentation.nii.gz")[0], expected)
    stored = json.loads(nibabel.load(tmp_path / "r.nii.gz").header.extensions[0].get_content())
    np.testing.assert_allclose(stored["task"]["label_probability"], recon.task["label"].numpy(), atol=1e-6)
    pirecon.save(recon, tmp_path / "dicom", format="dicom")
    np.testing.assert_array_equal(read_nifti(tmp_path / "dicom_segmentation.nii.gz")[0], expected)
    assert (tmp_path / "dicom").is_dir()


def test_the_classification_head_reads_the_segmentation_and_its_largest_logit():
    from pirecon.models.task_heads import ClassificationHead

    torch.manual_seed(0)
    head = ClassificationHead(4, 2, reads_segmentation=True)
    assert head.features[0].in_channels == 2 and head.linear.in_features == 2 * 8 + 1
    image = torch.rand(2, 2, 16, 16)
    low, high = torch.full((2, 1, 16, 16), -5.0), torch.full((2, 1, 16, 16), -5.0)
    high[:, :, 3, 3] = 5.0  # one confident lesion pixel: only the max-logit feature sees it
    with torch.no_grad():
        head.linear.weight[0, -1] = 1.0
        torch.testing.assert_close(head(image, high) - head(image, low), torch.full((2,), 10.0))
    with pytest.raises(ValueError, match=r"^ClassificationHead: expected segmentation_logit for "
                                         r"reads_segmentation=True, found None$"):
        head(image)
    model = TaskAdapted({"class_path": "classical"}, **HEADS)
    assert model.classification.reads_segmentation
    assert not TaskAdapted({"class_path": "classical"}, **HEADS,
                           classification_reads_segmentation=False).classification.reads_segmentation
    assert not TaskAdapted({"class_path": "classical"}, segmentation=None,
                           classification={}).classification.reads_segmentation


def test_a_sampling_backbone_gives_the_spread_of_the_task_over_its_samples(batch):
    torch.manual_seed(0)
    mc = {"class_path": "mc_dropout", "init_args": {"backbone": TINY_LPD, "p": 0.3, "samples": 5}}
    model = TaskAdapted(mc, **HEADS).eval()
    torch.manual_seed(1)
    result = model(batch.y, batch.physics)
    n = batch.y.shape[0]
    assert result.task["label_spread"].shape == (n,) and result.task["segmentation_spread"].shape == (n, 1, 32, 32)
    assert (result.task["label_spread"] > 0).all()  # dropout passes differ, so do their labels
    # the spread is the std of the heads' outputs over the very passes that formed the image: one draw
    torch.manual_seed(1)
    samples = model.reconstruction.sample_images(batch.y, batch.physics)
    labels = torch.stack([model._heads(s)["label"] for s in samples])
    torch.testing.assert_close(result.task["label_spread"], labels.std(dim=0))
    torch.testing.assert_close(result.image, samples.mean(dim=0))
    calls = []
    model.reconstruction.backbone.register_forward_hook(lambda *_: calls.append(1))
    model(batch.y, batch.physics)
    assert len(calls) == 1  # the S passes as one batch, not drawn again for the spread
    # training, or a backbone without samples: no spread
    assert "label_spread" not in model.train()(batch.y, batch.physics).task
    assert "label_spread" not in TaskAdapted(TINY_LPD, **HEADS).eval()(batch.y, batch.physics).task


def test_reconstruction_lr_gives_the_backbone_its_own_optimizer_group():
    from pirecon.training import ReconstructionModule

    task = {"class_path": "task_adapted", "init_args": {"reconstruction": TINY_LPD, **HEADS}}
    module = ReconstructionModule(task, lr=1e-3, reconstruction_lr=1e-5, schedule="constant")
    backbone, heads = module.configure_optimizers().param_groups
    assert (backbone["lr"], heads["lr"]) == (1e-5, 1e-3)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in module.model.reconstruction.parameters()}
    assert {id(p) for p in backbone["params"] + heads["params"]} == {id(p) for p in module.model.parameters()}
    assert len(backbone["params"]) + len(heads["params"]) == len(list(module.model.parameters()))
    assert len(ReconstructionModule(task, schedule="constant").configure_optimizers().param_groups) == 1
    with pytest.raises(ValueError, match=r"^reconstruction_lr: expected a task-adapted model \(TaskAdapted\), "
                                         r"found LearnedPrimalDual$"):
        ReconstructionModule(TINY_LPD, reconstruction_lr=1e-4)
    with pytest.raises(ValueError, match=r"^balance_task_loss: expected a task-adapted model"):
        ReconstructionModule(TINY_LPD, balance_task_loss=True)


def test_balanced_task_loss_divides_each_loss_by_its_running_mean():
    from pirecon.training import ReconstructionModule

    task = {"class_path": "task_adapted", "init_args": {"reconstruction": TINY_LPD, **HEADS}}
    assert "task_loss_means" not in ReconstructionModule(task).state_dict()  # old checkpoints load as before
    module = ReconstructionModule(task, balance_task_loss=True)
    assert "task_loss_means" in module.state_dict()  # saved: a resumed run keeps its means
    reconstruction, task_loss = torch.tensor(1e-4, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    first = module._balanced(reconstruction, task_loss)
    torch.testing.assert_close(torch.stack(first), torch.ones(2))  # the first step starts the means
    second = module._balanced(torch.tensor(2e-4), torch.tensor(0.25))
    means = torch.tensor([0.99 * 1e-4 + 0.01 * 2e-4, 0.99 * 0.5 + 0.01 * 0.25])
    torch.testing.assert_close(module.task_loss_means, means)
    torch.testing.assert_close(torch.stack(second), torch.tensor([2e-4, 0.25]) / means)
    (first[0] + first[1]).backward()  # the means carry no gradient: d/dl (l / m) = 1 / m
    torch.testing.assert_close(reconstruction.grad, torch.tensor(1 / 1e-4))
    torch.testing.assert_close(task_loss.grad, torch.tensor(1 / 0.5))


def test_full_head_gradient_gives_the_heads_the_whole_task_loss_and_the_backbone_c_of_it(batch, lesion_files):
    import copy

    segmentation, labels = _targets(lesion_files)
    torch.manual_seed(0)
    weighted = TaskAdapted(TINY_LPD, **HEADS, task_weight=0.25).train()
    full = copy.deepcopy(weighted)
    full.head_gradient = "full"
    assert weighted.loss_weights() == (0.75, 0.25) and full.loss_weights() == (0.75, 1.0)
    grads = {}
    for name, model in (("weighted", weighted), ("full", full)):
        result = model(batch.y, batch.physics)
        w_rec, w_task = model.loss_weights()
        reconstruction_loss = ((result.image - batch.ground_truth) ** 2).mean()
        (w_rec * reconstruction_loss + w_task * model.task_loss(result, segmentation, labels)).backward()
        grads[name] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    backbone = [k for k in grads["weighted"] if k.startswith("reconstruction.")]
    heads = [k for k in grads["weighted"] if not k.startswith("reconstruction.")]
    assert backbone and heads
    for k in backbone:  # (1 - C) grad l_rec + C grad l_task either way
        torch.testing.assert_close(grads["full"][k], grads["weighted"][k], rtol=1e-4, atol=1e-7)
    for k in heads:  # the heads: grad l_task, not C grad l_task
        torch.testing.assert_close(grads["full"][k], 4 * grads["weighted"][k], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match=r"^head_gradient: expected one of 'weighted', 'full', found 'half'"):
        TaskAdapted(TINY_LPD, **HEADS, head_gradient="half")
