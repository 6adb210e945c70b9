# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Test utilities that ship with the package: broken and valid input variants (:mod:`infnet_monai.testing.fuzz`) and
a small synthetic DICOM CT series (:mod:`infnet_monai.testing.dicom`), and a fast equality check of whole-scan masks
(:mod:`infnet_monai.testing.asserts`)."""
