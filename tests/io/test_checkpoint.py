import pickle

import pytest
import torch

from infnet_monai.io import CheckpointError, load_checkpoint, load_model, save_model
from infnet_monai.networks import InfNet

KW = {"in_channels": 1, "layers": [1, 1, 1, 1], "planes": [8, 16, 32, 64], "stem_channels": [8, 8, 16], "ra_channels": [16, 16, 16]}


def test_round_trip_fp16_and_fp32(tmp_path):
    torch.manual_seed(0)
    net = InfNet(**KW).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
    for fp16 in (False, True):
        path = save_model(tmp_path / f"m{fp16}.pt", net, KW, {"spatial_size": 64}, {"seed": 0}, fp16=fp16)
        loaded, info = load_model(path)
        assert info["preprocessing"] == {"spatial_size": 64} and info["metadata"] == {"seed": 0}
        with torch.no_grad():
            out = loaded(x)
        assert torch.allclose(out, ref, atol=1e-2 if fp16 else 1e-6)
    assert (tmp_path / "mTrue.pt").stat().st_size < 0.6 * (tmp_path / "mFalse.pt").stat().st_size


class Evil:
    def __reduce__(self):
        return (print, ("this code ran while loading",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "infnet-monai-model/1", "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_plain_pickle_and_garbage_refused(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match=str(p.name)):
        load_checkpoint(p)
    p.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_foreign_state_dict_refused(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save(InfNet(**KW).state_dict(), p)
    with pytest.raises(CheckpointError, match="not an infnet-monai model"):
        load_checkpoint(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_mismatched_configuration(tmp_path):
    path = save_model(tmp_path / "m.pt", InfNet(**KW), KW)
    ck = torch.load(path, weights_only=True)
    ck["network"]["rfb_channels"] = 8
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path)


def test_encoder_checkpoint_round_trip_and_errors(tmp_path):
    from infnet_monai.io import load_pretrained_encoder, save_encoder

    kwargs = {"in_channels": 1, "layers": (1, 1, 1, 1), "planes": (8, 16, 32, 64), "stem_channels": (8, 8, 16),
              "ra_channels": (16, 16, 16)}
    torch.manual_seed(0)
    source = InfNet(**kwargs)
    path = save_encoder(tmp_path / "enc.pt", source.backbone, kwargs, {"epochs": 3})
    target = InfNet(**kwargs)
    decoder_before = {k: v.clone() for k, v in target.state_dict().items() if not k.startswith("backbone.")}
    assert load_pretrained_encoder(target, path) is target
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[k], v)
    # only the backbone is touched
    for k, v in target.state_dict().items():
        if not k.startswith("backbone."):
            assert torch.equal(v, decoder_before[k])
    # an empty path means "no pretraining"
    assert load_pretrained_encoder(target, "") is target
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained_encoder(target, tmp_path / "missing.pt")
    other = InfNet(**{**kwargs, "planes": (8, 16, 32, 32)})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_pretrained_encoder(other, path)
    # a model checkpoint is not an encoder checkpoint
    save_model(tmp_path / "model.pt", source, kwargs)
    with pytest.raises(CheckpointError, match="not an infnet-monai encoder"):
        load_pretrained_encoder(target, tmp_path / "model.pt")


def test_model_spec_from_path_or_loaded_metadata(tmp_path):
    from infnet_monai.io import ModelSpec, save_calibrated_model

    prep = {"spatial_size": [64, 64], "in_channels": 1, "slice_mean": 0.4, "slice_std": 0.2}
    path = save_model(tmp_path / "m.pt", InfNet(**KW), KW, prep)
    spec = ModelSpec.from_checkpoint(path)
    assert spec == ModelSpec(network=KW, spatial_size=64, in_channels=1, mean=0.4, std=0.2, temperature=1.0, head="infection")
    assert ModelSpec.from_checkpoint(load_model(path)[1]) == spec  # the info dict, without its state dict
    calibrated = save_calibrated_model(path, tmp_path / "cal.pt", {"temperature": 0.25})
    assert ModelSpec.from_checkpoint(calibrated).temperature == 0.25
    with pytest.raises(Exception):
        spec.temperature = 2.0  # frozen: parsed once, read everywhere


def test_model_spec_defaults_and_class_heads():
    from infnet_monai.io import ModelSpec
    from infnet_monai.transforms import DEFAULT_SPATIAL_SIZE, SLICE_MEAN, SLICE_STD

    bare = ModelSpec.from_checkpoint({"network": {"in_channels": 3}})
    assert (bare.spatial_size, bare.in_channels, bare.mean, bare.std, bare.temperature, bare.head) == (
        DEFAULT_SPATIAL_SIZE, 3, SLICE_MEAN, SLICE_STD, 1.0, "infection"
    )
    head = ModelSpec.from_checkpoint(
        {"architecture": "UNet", "network": {"in_channels": 2}, "preprocessing": {"spatial_size": 256, "output": "class_softmax"},
         "calibration": {"temperature": 0.5}}
    )
    assert (head.head, head.spatial_size, head.in_channels, head.temperature) == ("classes", 256, 2, 0.5)


@pytest.mark.parametrize(
    "info, match",
    [
        ({"preprocessing": {"spatial_size": [64, 32]}}, "square"),
        ({"preprocessing": {"spatial_size": 0}}, "spatial_size"),
        ({"preprocessing": {"slice_std": 0}}, "slice_std"),
        ({"calibration": {"temperature": -1}}, "temperature"),
    ],
)
def test_model_spec_refuses_unusable_records(info, match):
    from infnet_monai.io import ModelSpec

    with pytest.raises(CheckpointError, match=match):
        ModelSpec.from_checkpoint(info)


def test_safe_torch_load_names_the_file_and_the_advice(tmp_path):
    from infnet_monai.io import safe_torch_load

    path = tmp_path / "state.pt"
    torch.save({"format": "x", "n": 1}, path)
    assert safe_torch_load(path) == {"format": "x", "n": 1}
    torch.save({"payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load propagation state '.*state\.pt'.*weights_only=True.*Delete it"):
        safe_torch_load(path, "propagation state", "Delete it to start over.")
