"""Post-processing transform pairs give exactly the functions' results, keep the metadata, and read the spacing."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from infnet_monai.data.phantom import make_chest_phantom
from infnet_monai.postprocessing.infection import infection_classes, postprocess_infection
from infnet_monai.postprocessing.lung import lung_mask
from infnet_monai.postprocessing.transforms import InfectionClasses, InfectionClassesd, InfectionMask, InfectionMaskd
from infnet_monai.postprocessing.transforms import LungMask, LungMaskd


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom((80, 80, 24), (4.0, 4.0, 10.0), seed=1)


def _meta(arr, affine):
    return MetaTensor(torch.as_tensor(np.asarray(arr)[None]), affine=torch.as_tensor(affine, dtype=torch.float64))


def test_pairs_match_the_functions(phantom):
    spacing = (4.0, 4.0, 10.0)
    image = _meta(phantom.volume_hu, phantom.affine)
    lung = LungMask()(image)
    assert isinstance(lung, MetaTensor) and lung.dtype == torch.uint8 and tuple(lung.shape) == (1, 80, 80, 24)
    np.testing.assert_array_equal(lung[0].numpy(), lung_mask(phantom.volume_hu, spacing))
    torch.testing.assert_close(lung.affine, image.affine)

    rng = np.random.default_rng(0)
    prob = _meta(rng.random(phantom.volume_hu.shape).astype(np.float32) * (phantom.infection > 0), phantom.affine)
    options = {"threshold": 0.3, "min_lesion_volume_mm3": 300.0, "min_lesion_extent_mm": 20.0}
    infection = InfectionMask(**options)(prob, lung)
    np.testing.assert_array_equal(infection[0].numpy(), postprocess_infection(prob[0].numpy(), lung[0].numpy(), spacing, **options))
    share = _meta(rng.random(phantom.volume_hu.shape), phantom.affine)
    assert lung.sum() > 1000 and 0 < infection.sum()  # not a vacuous comparison
    classes = InfectionClasses()(infection, share)
    np.testing.assert_array_equal(classes[0].numpy(), infection_classes(infection[0].numpy(), share[0].numpy()))

    d = LungMaskd("image")({"image": image})
    d = InfectionMaskd("prob", **options)({**d, "prob": prob})
    d = InfectionClassesd("infection", share_key="share")({**d, "share": share})
    for key, expected in (("lung", lung), ("infection", infection), ("classes", classes)):
        np.testing.assert_array_equal(d[key].numpy(), expected.numpy())


def test_spacing_must_be_known_and_shape_channel_first(phantom):
    with pytest.raises(ValueError, match="no voxel spacing"):
        LungMask()(phantom.volume_hu[None])
    out = LungMask(spacing_mm=(4.0, 4.0, 10.0))(phantom.volume_hu[None])
    assert out.shape == (1, 80, 80, 24)
    with pytest.raises(ValueError, match="channel-first"):
        LungMask(spacing_mm=(4.0, 4.0, 10.0))(phantom.volume_hu)


def test_extend_lung_and_burden_pairs_match_the_functions(phantom):
    from infnet_monai.postprocessing import ExtendLung, ExtendLungd, extend_lung
    from infnet_monai.stats import InfectionBurden, InfectionBurdend, class_burden, infection_burden

    spacing = (4.0, 4.0, 10.0)
    image = _meta(phantom.volume_hu, phantom.affine)
    lung_np = lung_mask(phantom.volume_hu, spacing)
    rng = np.random.default_rng(1)
    prob_np = (rng.random(phantom.volume_hu.shape) * 0.2 + 0.7 * (phantom.infection > 0)).astype(np.float32)
    share_np = rng.random(phantom.volume_hu.shape).astype(np.float32)
    pred = MetaTensor(torch.from_numpy(np.stack([prob_np, share_np])), affine=image.affine)  # two channels
    expected = extend_lung(lung_np, prob_np, phantom.volume_hu, spacing, threshold=0.3)
    out = ExtendLungd("lung", probability_key="pred", image_key="image", threshold=0.3)(
        {"lung": _meta(lung_np, phantom.affine), "pred": pred, "image": image}
    )["lung"]
    np.testing.assert_array_equal(out[0].numpy(), expected)
    assert (expected > 0).sum() >= (lung_np > 0).sum()
    lung_t = _meta(lung_np, phantom.affine)
    np.testing.assert_array_equal(ExtendLung(threshold=0.3)(lung_t, pred, image)[0].numpy(), expected)

    d = {"pred": pred, "lung": _meta(expected, phantom.affine)}
    d = InfectionMaskd("pred", lung_key="lung", output_key="infection", min_lesion_volume_mm3=0.0, channel=0)(d)
    d = InfectionClassesd("infection", share_key="pred", share_channel=1, output_key="classes")(d)
    d = InfectionBurdend("infection", lung_key="lung", classes_key="classes")(d)
    infection = postprocess_infection(prob_np, expected, spacing, min_lesion_volume_mm3=0.0)
    np.testing.assert_array_equal(d["infection"][0].numpy(), infection)
    np.testing.assert_array_equal(d["classes"][0].numpy(), infection_classes(infection, share_np))
    want = dict(infection_burden(infection, expected, spacing))
    want.update(class_burden(d["classes"][0].numpy(), expected, spacing))
    assert d["burden"] == pytest.approx(want, nan_ok=True)
    assert InfectionBurden()(d["infection"], d["lung"]) == pytest.approx(infection_burden(infection, expected, spacing), nan_ok=True)
    # a one-channel probability (no GGO / consolidation head): no class map
    one = InfectionClassesd("infection", share_key="p", share_channel=1)({"infection": d["infection"], "p": pred[:1]})
    assert "classes" not in one
    with pytest.raises(ValueError, match="channel 1"):
        InfectionMask(channel=1)(pred[:1], d["lung"])


def test_load_ct_transform_reads_cases_paths_and_passes_volumes(data_dir, tmp_path):
    from infnet_monai.io import CaseError, discover_cases, load_ct
    from infnet_monai.transforms import LoadCT, LoadCTd

    path = data_dir / "ct" / "abdomen_3mm_small.nii.gz"
    (case,) = discover_cases(path)
    by_path = LoadCTd("image")({"image": str(path)})["image"]
    by_case = LoadCT()(case)
    loaded = load_ct(case)
    for image in (by_path, by_case):
        assert isinstance(image, MetaTensor)
        np.testing.assert_array_equal(image.numpy(), loaded.numpy())
        np.testing.assert_allclose(image.affine.numpy(), loaded.affine.numpy())
    assert LoadCT()(loaded) is loaded
    with pytest.raises(CaseError, match=r"abdomen_3mm_small.nii.gz: .* voxels along its longest axis is over the limit of 10"):
        LoadCT(max_slices=10)(case)
    with pytest.raises(CaseError, match="0 CT cases"):
        LoadCT()(tmp_path)


def test_a_uint8_share_in_255ths_classifies_exactly_like_the_float_share_at_one_half():
    share = np.linspace(0.0, 1.0, 20001, dtype=np.float32).reshape(1, 1, -1)
    infection = np.ones_like(share, dtype=np.uint8)
    as_bytes = np.round(share * 255.0).astype(np.uint8)  # how the pipeline keeps it on long scans
    np.testing.assert_array_equal(infection_classes(infection, as_bytes), infection_classes(infection, share))


def test_lung_mask_transform_checks_its_options_when_made():
    with pytest.raises(ValueError, match="max_pure_air_fraction"):
        LungMask(max_pure_air_fraction=2.0)
    with pytest.raises(ValueError, match="max_pure_air_fraction"):
        LungMaskd("image", max_pure_air_fraction=2.0)


def _defaults(fn) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("transform", ["LungMask", "LungMaskd", "InfectionMask", "InfectionMaskd", "ExtendLung", "ExtendLungd"])
def test_transform_keywords_are_the_wrapped_functions_with_their_defaults(transform):
    """The transforms restate the keyword arguments of what they wrap (explicit signatures, no ``**kwargs``): the
    names and defaults must stay those of the function (or options) they pass them to."""
    import dataclasses
    import inspect

    from infnet_monai.postprocessing import transforms
    from infnet_monai.postprocessing.extension import extend_lung
    from infnet_monai.postprocessing.infection import infection_and_nodules
    from infnet_monai.postprocessing.lung import LungMaskOptions

    wrapped = {
        "LungMask": {f.name: f.default for f in dataclasses.fields(LungMaskOptions)},
        "InfectionMask": {k: v for k, v in _defaults(infection_and_nodules).items() if k != "volume_hu"},
        "ExtendLung": {k: v for k, v in _defaults(extend_lung).items() if k != "in_place"},
    }[transform.rstrip("d")]
    params = inspect.signature(getattr(transforms, transform)).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    keyword_only = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keyword_only == wrapped
