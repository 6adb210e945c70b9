"""The slab-wise array helpers give what the whole-array numpy / scipy calls give."""

import numpy as np
from scipy import ndimage as ndi

from infnet_monai.utils.arrays import (
    SLAB_SLICES,
    component_sizes,
    count_where,
    fortran_order,
    label_components,
    slabwise,
)


def test_slabwise_and_count_where_equal_the_whole_array_expressions():
    rng = np.random.default_rng(0)
    a = rng.random((7, 5, 3 * SLAB_SLICES + 5)).astype(np.float16)
    b = rng.integers(0, 3, size=a.shape).astype(np.uint8)
    expected = (a >= 0.5) & (b > 0)
    got = slabwise(lambda x, y: (x >= 0.5) & (y > 0), a, b)
    assert got.dtype == bool and np.array_equal(got, expected)
    labels = slabwise(lambda y: y * 2, b, dtype=np.uint8)
    assert np.array_equal(labels, b * 2)
    assert count_where(lambda x, y: (x >= 0.5) & (y == 2), a, b) == int(((a >= 0.5) & (b == 2)).sum())


def test_labels_fit_uint16_else_int32_and_sizes_match_bincount():
    structure = np.ones((3, 3, 3), dtype=bool)
    mask = np.zeros((40, 40, 2 * SLAB_SLICES + 3), dtype=bool)
    mask[2:10, 2:10, 5:50] = True
    mask[20:30, 20:22, 1:3] = True
    labels, n = label_components(mask, structure)
    assert labels.dtype == np.uint16 and n == 2
    ref, n_ref = ndi.label(mask, structure=structure)
    assert n_ref == n and np.array_equal(labels > 0, ref > 0)
    assert np.array_equal(component_sizes(labels, n), np.bincount(labels.ravel(), minlength=n + 1))
    many = np.zeros((600, 600, 1), dtype=bool)
    many[::2, ::2] = True  # 90000 isolated voxels: more labels than uint16 holds
    labels, n = label_components(many, structure)
    assert labels.dtype == np.int32 and n == 90000
    assert component_sizes(labels, n)[1:].tolist() == [1] * n


def test_fortran_order_keeps_every_value_and_any_layout():
    rng = np.random.default_rng(4)
    for shape in ((130, 70, 5), (65, 129), (3, 66, 70, 2), (7,)):
        a = rng.random(shape).astype(np.float32)
        for view in (a, a[::-1], a.T, a[..., ::2] if a.ndim > 1 else a[::3]):
            out = fortran_order(view)
            np.testing.assert_array_equal(out, view)
            assert out.flags.f_contiguous
    f = np.asfortranarray(rng.random((70, 66, 3)))
    assert fortran_order(f) is f  # nothing copied


def test_fortran_order_casts_in_the_same_copy():
    a = np.random.default_rng(5).integers(0, 3, (70, 66, 4)).astype(np.float32)
    out = fortran_order(a, np.uint8)
    assert out.dtype == np.uint8 and out.flags.f_contiguous
    np.testing.assert_array_equal(out, a.astype(np.uint8))
    f = np.asfortranarray(a)
    assert fortran_order(f) is f and fortran_order(f, np.uint8).dtype == np.uint8
