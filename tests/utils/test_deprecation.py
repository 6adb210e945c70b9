"""Names that moved keep working from their old import paths, with a FutureWarning naming the new one."""

import importlib

import pytest


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("infnet_monai.inferers", "predict_slice_folder", "infnet_monai.apps.slices"),
        ("infnet_monai.inferers.slices", "SliceFolderReport", "infnet_monai.apps.slices"),
        ("infnet_monai.inferers.slices", "read_slice", "infnet_monai.io.slices"),
        ("infnet_monai.inferers.slices", "write_png_atomic", "infnet_monai.io.slices"),
        ("infnet_monai.inferers", "resolve_temperature", "infnet_monai.io.checkpoint"),
        ("infnet_monai.inferers.calibration", "calibrate_model", "infnet_monai.apps.calibration"),
        ("infnet_monai.inferers.calibration", "DEFAULT_TEMPERATURES", "infnet_monai.apps.calibration"),
        ("infnet_monai.data", "with_infection_priors", "infnet_monai.apps.priors"),
        ("infnet_monai.data.priors", "with_infection_priors", "infnet_monai.apps.priors"),
        ("infnet_monai.io.volume", "SimpleITKSeriesReader", "infnet_monai.io.dicom_series"),
        ("infnet_monai.io.volume", "CompactNibabelReader", "infnet_monai.io.nifti"),
        ("infnet_monai.io.volume", "RAW_CT_OFFSET", "infnet_monai.io.hounsfield"),
        ("infnet_monai.io.volume", "HU_PLAUSIBLE_RANGE", "infnet_monai.io.hounsfield"),
        ("infnet_monai.io.volume", "MIN_SPACING_MM", "infnet_monai.io.base_reader"),
        ("infnet_monai.testing.fuzz", "write_dicom_series", "infnet_monai.testing.dicom"),
        ("infnet_monai.metrics.paper", "PaperMetricAccumulator", "infnet_monai.metrics.accumulator"),
        ("infnet_monai.metrics.paper", "evaluate_folders", "infnet_monai.metrics.folders"),
        ("infnet_monai.engines.propagation", "soft_edge_map", "infnet_monai.engines.pseudo_labels"),
        ("infnet_monai.engines.propagation", "SEED_STREAMS", "infnet_monai.engines.propagation_config"),
        ("infnet_monai.io.cases", "CT_SOP_CLASS_UIDS", "infnet_monai.io.dicom_headers"),
        ("infnet_monai.io.cases", "read_dicom_header", "infnet_monai.io.dicom_headers"),
        ("infnet_monai.io.cases", "CHEST_BODY_PARTS", "infnet_monai.io.dicom_grouping"),
    ],
)
def test_moved_names_warn_and_resolve(old, name, new):
    with pytest.warns(FutureWarning, match=rf"{old}\.{name} is deprecated: use {new}\.{name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_renamed_data_dir():
    from infnet_monai.data import shared_data_dir

    with pytest.warns(FutureWarning, match="use infnet_monai.data.paths.shared_data_dir"):
        from infnet_monai.data import default_data_dir
    assert default_data_dir is shared_data_dir


def test_unknown_names_still_raise():
    import infnet_monai.inferers

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        infnet_monai.inferers.nope  # noqa: B018
