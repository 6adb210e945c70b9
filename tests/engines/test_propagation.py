"""Random-selection propagation (Semi-Inf-Net) on a few real slices, with interruption and resume."""

import json

import numpy as np
import pytest
import torch
from ignite.engine import Events
from PIL import Image

from infnet_monai.data import labeled_datalist, unlabeled_datalist
from infnet_monai.engines import RandomSelectionPropagation, pseudo_label_confidence, soft_edge_map
from infnet_monai.io import load_checkpoint, load_model

TINY = {
    "spatial_dims": 2,
    "in_channels": 1,
    "layers": [1, 1, 1, 1],
    "planes": [8, 16, 32, 64],
    "stem_channels": [8, 8, 16],
    "ra_channels": [16, 16, 16],
}


def test_soft_edge_map_of_a_binary_mask_is_the_labeled_edge_recipe():
    from scipy import ndimage

    mask = np.zeros((20, 24), bool)
    mask[5:14, 6:17] = True
    expected = ndimage.binary_dilation(mask) ^ ndimage.binary_erosion(mask)
    np.testing.assert_array_equal(soft_edge_map(mask.astype(np.float32)) > 0.5, expected)
    soft = soft_edge_map(mask * 0.4)
    assert soft.max() == pytest.approx(0.4) and soft.min() == 0.0


def _propagation(tmp_path, data_dir, initial_model, **kwargs):
    torch.manual_seed(0)
    from infnet_monai.networks import InfNet

    net = InfNet(**TINY)
    options = dict(
        network=net,
        network_kwargs=TINY,
        labeled=labeled_datalist(data_dir)[:3],
        unlabeled=unlabeled_datalist(data_dir)[:6],
        output_dir=tmp_path / "semi",
        initial_model=initial_model,
        group_size=2,
        num_groups=2,
        steps_per_group=1,
        batch_size=2,
        spatial_size=64,
        pseudo_epochs=1,
        pseudo_chunk=1,
        preprocessing={"spatial_size": 64, "in_channels": 1},
    )
    options.update(kwargs)
    return RandomSelectionPropagation(**options)


@pytest.fixture
def tiny_initial(tmp_path):
    from infnet_monai.io import save_model
    from infnet_monai.networks import InfNet

    torch.manual_seed(1)
    path = tmp_path / "initial.pt"
    save_model(path, InfNet(**TINY), TINY, preprocessing={"spatial_size": 64, "in_channels": 1})
    return path


def test_two_groups_then_pseudo_stage(tmp_path, data_dir, tiny_initial):
    prop = _propagation(tmp_path, data_dir, tiny_initial)
    summary = prop.run()
    # no fine-tuning trainer given: the run ends after stage 2, waiting for stage 3
    assert summary["stage"] == "finetune"
    assert summary["groups_done"] == summary["num_groups"] == 2
    # 4 pseudo-labeled slices, 1 pass, chunks of 1 iteration x batch 2
    assert summary["pseudo_steps"] == summary["pseudo_steps_done"] == 2
    pseudo = sorted((tmp_path / "semi" / "propagation" / "pseudo_labels").glob("*.png"))
    assert len(pseudo) == 8  # 4 labels + 4 edge maps
    groups = torch.load(prop.state_path, weights_only=True)["groups"]
    for group in groups:
        for slice_id in group:
            image = Image.open(prop.unlabeled[slice_id]["image"])
            label = Image.open(tmp_path / "semi" / "propagation" / "pseudo_labels" / f"{slice_id}.png")
            assert label.size == image.size and label.mode == "L"
    # soft, not thresholded: an untrained network gives intermediate probabilities
    values = np.unique(np.asarray(Image.open(pseudo[0])))
    assert len(values) > 2
    state = json.loads((tmp_path / "semi" / "propagation" / "state.json").read_text())
    assert state["stage"] == "finetune" and state["groups_done"] == 2
    # the stage-2 result is a self-describing model that loads
    net, info = load_model(tmp_path / "semi" / "propagated.pt")
    assert info["metadata"]["pseudo_labeled_slices"] == 4
    # weights changed from the initial model
    initial = load_checkpoint(tiny_initial)["state_dict"]
    exported = load_checkpoint(tmp_path / "semi" / "propagated.pt")["state_dict"]
    assert any(not torch.equal(initial[k], exported[k]) for k in initial if initial[k].is_floating_point())


def test_interrupted_run_resumes_at_the_next_group(tmp_path, data_dir, tiny_initial):
    prop = _propagation(tmp_path, data_dir, tiny_initial)

    def interrupt(engine):
        raise KeyboardInterrupt

    prop.propagate_engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), interrupt)
    with pytest.raises(KeyboardInterrupt):
        prop.run()
    saved = torch.load(prop.state_path, weights_only=True)
    assert saved["stage"] == "propagate" and saved["groups_done"] == 1
    first_group = saved["groups"][0]
    label_dir = tmp_path / "semi" / "propagation" / "pseudo_labels"
    first_label = (label_dir / f"{first_group[0]}.png").read_bytes()
    assert len(list(label_dir.glob("*.png"))) == 4  # group 1 only: 2 labels + 2 edges
    assert not list(label_dir.glob(".*part*"))  # no half-written files
    weights_after_group_1 = {k: v.clone() for k, v in saved["network"].items()}

    # a new process (new object, fresh network) picks the run up from disk
    resumed = _propagation(tmp_path, data_dir, tiny_initial)
    assert resumed.load_state()
    for k, v in resumed.network.state_dict().items():
        assert torch.equal(v.cpu(), weights_after_group_1[k])
    summary = resumed.run()
    assert summary["groups_done"] == 2 and summary["stage"] == "finetune"
    history = torch.load(resumed.state_path, weights_only=True)["history"]
    assert [h["step"] for h in history if h["stage"] == "propagate"] == [0, 1]  # group 0 not redone
    assert (label_dir / f"{first_group[0]}.png").read_bytes() == first_label
    assert len(list(label_dir.glob("*.png"))) == 8


def test_resume_with_other_settings_is_refused(tmp_path, data_dir, tiny_initial):
    _propagation(tmp_path, data_dir, tiny_initial).run(stop_after="propagate")
    with pytest.raises(ValueError, match="differs from the current settings"):
        _propagation(tmp_path, data_dir, tiny_initial, group_size=3).run()


def test_fresh_run_needs_an_initial_model(tmp_path, data_dir):
    with pytest.raises(ValueError, match="initial_model is required"):
        _propagation(tmp_path, data_dir, None).run()


def _finetune_trainer(net, data_dir, out, epochs=2):
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.handlers import CheckpointSaver

    from infnet_monai.engines import MultiScaleIteration
    from infnet_monai.losses import DeepSupervisionLoss
    from infnet_monai.transforms import train_slice_transforms

    data = [{k: d[k] for k in ("image", "label", "edge")} for d in labeled_datalist(data_dir)[:2]]
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs,
        train_data_loader=DataLoader(Dataset(data, train_slice_transforms(64)), batch_size=2),
        network=net, optimizer=optimizer, loss_function=DeepSupervisionLoss(),
        iteration_update=MultiScaleIteration((1.0,)),
    )
    objects = {"network": net, "optimizer": optimizer, "trainer": trainer}
    CheckpointSaver(str(out), objects, file_prefix="resume", save_interval=1, n_saved=1).attach(trainer)
    return trainer, objects


def test_fine_tuning_stage_resumes_from_its_last_epoch(tmp_path, data_dir, tiny_initial):
    prop = _propagation(tmp_path, data_dir, tiny_initial, batch_size=5)
    trainer, objects = _finetune_trainer(prop.network, data_dir, tmp_path / "semi")
    prop.finetune_trainer, prop.finetune_resume = trainer, objects
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs_run.append(e.state.epoch))

    def interrupt(engine):
        raise KeyboardInterrupt

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), interrupt)
    with pytest.raises(KeyboardInterrupt):
        prop.run()
    assert epochs_run == [1]
    assert torch.load(prop.state_path, weights_only=True)["stage"] == "finetune"

    resumed = _propagation(tmp_path, data_dir, tiny_initial, batch_size=5)
    trainer, objects = _finetune_trainer(resumed.network, data_dir, tmp_path / "semi")
    resumed.finetune_trainer, resumed.finetune_resume = trainer, objects
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs_run.append(e.state.epoch))
    assert resumed.run()["stage"] == "done"
    assert epochs_run == [2]  # epoch 1 was not redone


def test_pseudo_label_confidence():
    assert pseudo_label_confidence(np.full((4, 4), 0.5)) == pytest.approx(0.0)
    assert pseudo_label_confidence(np.array([[0.0, 1.0]])) == pytest.approx(1.0)
    assert pseudo_label_confidence(np.array([[0.25, 1.0]])) == pytest.approx(0.75)


def test_confidence_filter_and_labeled_mixing_in_stage_two(tmp_path, data_dir, tiny_initial):
    # group 0 is predicted by the initial model before any training, so its confidences are known in advance
    probe = _propagation(tmp_path / "probe", data_dir, tiny_initial, num_groups=1)
    probe.run(stop_after="propagate")
    first = sorted(probe.state["confidence"].values())
    assert len(first) == 2 and first[0] < first[1]
    threshold = (first[0] + first[1]) / 2  # leaves out one of group 0's pseudo-labels

    prop = _propagation(tmp_path, data_dir, tiny_initial, min_confidence=threshold, pseudo_labeled_fraction=0.5)
    seen: list[list[str]] = []
    original = prop._train_on

    def spy(entries, iterations, lr, seed):
        seen.append([e["id"] for e in entries])
        return original(entries, iterations, lr, seed)

    prop._train_on = spy
    summary = prop.run()
    confidence = prop.state["confidence"]
    assert sorted(confidence) == sorted(i for g in prop.state["groups"] for i in g)
    kept = {i for i, c in confidence.items() if c >= threshold}
    assert 1 <= len(kept) <= 3 and summary["pseudo_labeled_slices_kept"] == len(kept)
    labeled_ids = {d["id"] for d in prop.labeled}
    # stage 1 pools: labeled + kept pseudo-labels only
    for pool in seen[:2]:
        assert set(pool) <= labeled_ids | kept
    # stage 2: each step of 1 iteration x batch 2 holds 1 kept pseudo-label and 1 labeled slice; one pass covers all
    stage2 = seen[2:]
    assert summary["pseudo_steps"] == len(stage2) == len(kept)
    for chunk in stage2:
        assert len(chunk) == 2 and len(set(chunk) & kept) == 1 and len(set(chunk) & labeled_ids) == 1
    assert set().union(*map(set, stage2)) & kept == kept
    # PNGs are written for every pseudo-label, kept or not
    assert len(list((tmp_path / "semi" / "propagation" / "pseudo_labels").glob("*_edge.png"))) == 4


def test_pseudo_label_temperature_sharpens_the_pseudo_labels(tmp_path, data_dir, tiny_initial):
    maps = {}
    for t in (1.0, 0.25):
        prop = _propagation(tmp_path / str(t), data_dir, tiny_initial, num_groups=1, pseudo_label_temperature=t)
        prop.run(stop_after="propagate")
        maps[t] = prop.state["confidence"]
    # same initial model, same slices: only the temperature differs
    assert maps[1.0].keys() == maps[0.25].keys()
    assert all(maps[0.25][i] > maps[1.0][i] for i in maps[1.0])


def test_bad_safeguard_settings_are_refused(tmp_path, data_dir, tiny_initial):
    with pytest.raises(ValueError, match="min_confidence"):
        _propagation(tmp_path, data_dir, tiny_initial, min_confidence=1.5)
    with pytest.raises(ValueError, match="pseudo_labeled_fraction"):
        _propagation(tmp_path, data_dir, tiny_initial, pseudo_labeled_fraction=1.0)
    with pytest.raises(ValueError, match="pseudo_label_temperature"):
        _propagation(tmp_path, data_dir, tiny_initial, pseudo_label_temperature=0.0)
