"""medsec.data.dicom.read_dicom against hand-computed oracles (generated DICOM files)."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from medsec.data.dicom import read_dicom
from medsec.errors import DataError
from tests.dicom_factory import make_dataset, write


def test_rescale_then_window_matches_the_linear_formula(tmp_path):
    # CT: stored 12-bit values, HU = stored - 1024; window centre 40, width 400 (LINEAR):
    # y = ((HU - 39.5) / 399 + 0.5) inside (-160, 239], 0 below, 1 above (PS3.3 C.11.2.1.2)
    stored = np.array([[0, 1024, 1100], [1224, 2000, 4095]], dtype=np.uint16)
    path = write(make_dataset(stored, bits_stored=12, slope=1, intercept=-1024,
                              window=(40, 400)), tmp_path / "ct.dcm")
    hu = stored.astype(float) - 1024
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1)
    expected[hu <= -160] = 0
    expected[hu > 239] = 1
    out = read_dicom(path, max_pixels=10_000)
    assert out.dtype == np.float32 and out.shape == (1, 2, 3)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    assert out[0, 0, 1] == pytest.approx(0.5 - 39.5 / 399, abs=1e-6)  # HU 0 -> 0.40100


def test_rescale_slope_without_window_uses_the_stored_bit_range(tmp_path):
    # slope 2, intercept -1000: range [-1000, 2*4095-1000] -> stored v maps to v / 4095
    stored = np.array([[0, 1, 2048, 4095]], dtype=np.uint16)
    path = write(make_dataset(stored, bits_stored=12, slope=2, intercept=-1000),
                 tmp_path / "a.dcm")
    np.testing.assert_allclose(read_dicom(path, 100)[0], stored / 4095, atol=1e-6)


def test_signed_pixels_use_the_signed_range(tmp_path):
    stored = np.array([[-32768, 0, 32767]], dtype=np.int16)
    path = write(make_dataset(stored, signed=True), tmp_path / "s.dcm")
    np.testing.assert_allclose(read_dicom(path, 100)[0],
                               (stored.astype(float) + 32768) / 65535, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 51, 255]], dtype=np.uint8)
    path = write(make_dataset(stored, photometric="MONOCHROME1"), tmp_path / "m1.dcm")
    np.testing.assert_allclose(read_dicom(path, 100)[0], 1 - stored / 255, atol=1e-6)


def test_multi_frame_keeps_every_frame_in_order(tmp_path):
    frames = np.stack([np.full((4, 5), 10 * k, dtype=np.uint8) for k in range(3)])
    path = write(make_dataset(frames), tmp_path / "mf.dcm")
    out = read_dicom(path, 1000)
    assert out.shape == (3, 4, 5)
    np.testing.assert_allclose(out[:, 0, 0], [0, 10 / 255, 20 / 255], atol=1e-6)


def test_rgb_becomes_luma(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    path = write(make_dataset(rgb, photometric="RGB", modality="OT"), tmp_path / "c.dcm")
    out = read_dicom(path, 100)
    assert out.shape == (1, 2, 2)
    assert out[0, 0, 0] == pytest.approx(0.299, abs=1e-6)
    assert out[0, 1, 1] == pytest.approx(0.114, abs=1e-6)


def test_rle_compressed_equals_uncompressed(tmp_path):
    stored = np.random.default_rng(0).integers(0, 4096, (2, 16, 16)).astype(np.uint16)
    plain = write(make_dataset(stored, bits_stored=12), tmp_path / "plain.dcm")
    ds = make_dataset(stored, bits_stored=12)
    ds.compress(RLELossless)
    rle = write(ds, tmp_path / "rle.dcm")
    np.testing.assert_array_equal(read_dicom(rle, 10_000), read_dicom(plain, 10_000))


def test_jpeg_baseline_decodes_through_pillow(tmp_path):
    from PIL import Image

    img = (np.add.outer(np.arange(32), np.arange(32)) * 4).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    ds = make_dataset(img)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "MONOCHROME2"
    out = read_dicom(write(ds, tmp_path / "jpeg.dcm"), 10_000)
    assert np.abs(out[0] - img / 255).max() < 0.03  # lossy, quality 95


def test_missing_decoder_names_file_syntax_and_packages(tmp_path):
    ds = make_dataset(np.zeros((8, 8), dtype=np.uint16))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really jpeg-ls \xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = write(ds, tmp_path / "ls.dcm")
    with pytest.raises(DataError) as err:
        read_dicom(path, 1000)
    msg = str(err.value)
    assert "ls.dcm" in msg and "JPEG-LS" in msg and "pyjpegls" in msg and "\n" not in msg


def test_truncated_file_is_a_data_error_naming_it(tmp_path):
    path = write(make_dataset(np.ones((64, 64), dtype=np.uint16)), tmp_path / "cut.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4000])
    with pytest.raises(DataError, match="cut.dcm"):
        read_dicom(path, 100_000)


def test_pixel_less_file_is_refused(tmp_path):
    ds = make_dataset(np.ones((4, 4), dtype=np.uint16))
    del ds.PixelData
    with pytest.raises(DataError, match="nopix.dcm: the DICOM file has no pixel data"):
        read_dicom(write(ds, tmp_path / "nopix.dcm"), 100)


def test_not_dicom_is_refused(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("hello")
    with pytest.raises(DataError, match="notes.dcm: not a DICOM file"):
        read_dicom(path, 100)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    # header: 65535 x 65535 x 1000 frames (4.3e12 samples, 8.6 TB as uint16), 32 bytes of data
    ds = make_dataset(np.ones((4, 4), dtype=np.uint16))
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 1000
    path = write(ds, tmp_path / "huge.dcm")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="huge.dcm: the header declares .* over the limit"):
            read_dicom(path, max_pixels=512 * 512)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    # the same file under a (silly) limit that lets it through fails in decoding instead
    with pytest.raises(DataError, match="cannot be decoded"):
        read_dicom(path, max_pixels=10**13)
