"""Image decoding policy: every mode becomes the RGB a viewer shows; bad files are one DatasetError line naming the file.

Oracles are the pixel values the test wrote (scaled by hand for 16-bit data, alpha-composited by
hand over white, rotated with numpy for EXIF orientations).
"""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from deformable_detr.errors import DatasetError
from deformable_detr.pipeline.decode import MAX_PIXELS, image_size, load_rgb_image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _with_png_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming another size (valid CRC), so the header passes and the pixels do not."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 65535], [30000, 40000, 50000, 12345]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # the file really is 16-bit
    rgb = np.asarray(load_rgb_image(path))
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert rgb.shape == (2, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], expected)


def test_grayscale_palette_and_bilevel(tmp_path):
    gray = np.array([[0, 50, 100], [150, 200, 255]], dtype=np.uint8)
    rgb = np.asarray(load_rgb_image(_png_bytes(Image.fromarray(gray, "L"))))
    np.testing.assert_array_equal(rgb, np.repeat(gray[:, :, None], 3, axis=2))
    colours = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    palette = Image.fromarray(colours, "RGB").quantize(colors=4)
    np.testing.assert_array_equal(np.asarray(load_rgb_image(_png_bytes(palette))), colours)
    bilevel = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    np.testing.assert_array_equal(np.asarray(load_rgb_image(_png_bytes(bilevel)))[0, :, 0], [0, 255])


def test_transparency_is_composited_over_white():
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    rgb = np.asarray(load_rgb_image(_png_bytes(Image.fromarray(rgba, "RGBA")))).astype(np.int64)
    alpha = rgba[..., 3:4] / 255.0
    expected = rgba[..., :3] * alpha + 255 * (1 - alpha)
    np.testing.assert_allclose(rgb, expected, atol=1)
    transparent_palette = Image.new("P", (2, 1))
    transparent_palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    transparent_palette.putpixel((1, 0), 1)
    transparent_palette.info["transparency"] = 0
    np.testing.assert_array_equal(
        np.asarray(load_rgb_image(_png_bytes(transparent_palette)))[0], [[255, 255, 255], [255, 0, 0]]
    )


def test_cmyk_jpeg_decodes_to_its_colours():
    colours = np.zeros((32, 32, 3), dtype=np.uint8)
    colours[:, :16] = (200, 30, 60)
    colours[:, 16:] = (20, 180, 240)
    buffer = io.BytesIO()
    Image.fromarray(colours).convert("CMYK").save(buffer, "JPEG", quality=95)
    assert Image.open(io.BytesIO(buffer.getvalue())).mode == "CMYK"
    rgb = np.asarray(load_rgb_image(buffer.getvalue())).astype(np.int64)
    np.testing.assert_allclose(rgb[4:-4, 4:12], colours[4:-4, 4:12], atol=6)  # JPEG error away from the edge
    np.testing.assert_allclose(rgb[4:-4, 20:28], colours[4:-4, 20:28], atol=6)


@pytest.mark.parametrize("orientation, rotate", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, rotate):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    expected = np.rot90(pixels, k=rotate)  # orientation 6 = rotate 90 clockwise to display
    decoded = load_rgb_image(path)
    np.testing.assert_array_equal(np.asarray(decoded), expected)
    assert image_size(path) == decoded.size


def test_one_pixel_image():
    assert load_rgb_image(_png_bytes(Image.new("RGB", (1, 1), (1, 2, 3)))).getpixel((0, 0)) == (1, 2, 3)


def test_long_side_over_the_limit_is_downscaled_and_reports_its_original_size():
    image = load_rgb_image(_png_bytes(Image.new("L", (12_000, 60), 77)), max_side=10_000)
    assert image.size == (10_000, 50)
    assert image.info["original_size"] == (12_000, 60)
    assert image.getpixel((5000, 25)) == (77, 77, 77)
    small = load_rgb_image(_png_bytes(Image.new("L", (300, 200))), max_side=100)
    assert small.size == (100, 67) and small.info["original_size"] == (300, 200)


@pytest.mark.parametrize("side", [20_000, 13_500])
def test_decompression_bomb_sizes_are_refused_without_warnings(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_with_png_size(_png_bytes(Image.new("L", (8, 8))), side, side))
    assert side * side > MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetError, match=r"bomb\.png: .*pixel limit.*downscale") as error:
            load_rgb_image(path)
        with pytest.raises(DatasetError, match="pixel limit"):
            image_size(path)
    assert "\n" not in str(error.value)


def test_sizes_under_the_bomb_limit_but_over_pil_warning_give_no_warning(tmp_path):
    path = tmp_path / "header_only.png"
    path.write_bytes(_with_png_size(_png_bytes(Image.new("L", (8, 8))), 10_000, 10_000))  # 1e8 px > PIL's warning level
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetError, match="header_only.png: cannot decode"):
            load_rgb_image(path)


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is a text file, not a picture", "not an image file"),
        (None, "cannot decode|not a readable image"),  # truncated JPEG
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, content, message):
    content = _truncated_jpeg() if content is None else content
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    for source, name in ((path, str(path)), (content, "upload.jpg"), (io.BytesIO(content), "stream.jpg")):
        with pytest.raises(DatasetError, match=message) as error:
            load_rgb_image(source, name=None if source is path else name)
        assert str(error.value).startswith(name) and "\n" not in str(error.value)
        assert "annotation" not in str(error.value)  # neutral by default: predict has no annotations


def test_missing_file_directory_and_custom_hint(tmp_path):
    with pytest.raises(DatasetError, match="missing.png: image file not found"):
        load_rgb_image(tmp_path / "missing.png")
    with pytest.raises(DatasetError, match="not a readable image"):
        load_rgb_image(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="remove it from the annotations"):
        load_rgb_image(tmp_path / "bad.png", hint="replace the file or remove it from the annotations")
    with pytest.raises(DatasetError, match="not an image"):
        image_size(tmp_path / "bad.png")


def test_truncated_jpeg_found_by_image_size_verify(tmp_path):
    path = tmp_path / "t.jpg"
    path.write_bytes(_truncated_jpeg())
    assert image_size(path, verify=False) == (64, 64)
    with pytest.raises(DatasetError, match="t.jpg"):
        image_size(path, verify=True)
