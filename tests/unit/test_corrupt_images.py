"""No input image, however broken, is the server's error: every corrupt, truncated or hostile file is
either decoded to an RGB picture or refused with InvalidRequest naming the field (which each dialect
answers as a 4xx), never another exception."""

from __future__ import annotations

import pytest
from helpers.corrupt_images import corrupt_files, hostile_files, valid_files

from glm_image_server.core.request import InvalidRequest
from glm_image_server.media.inputs import decode_image

MAX_PIXELS = 4096 * 4096


@pytest.mark.parametrize(("name", "data"), list(valid_files().items()))
def test_files_with_every_kind_of_metadata_decode(name: str, data: bytes) -> None:
    image = decode_image(data, "image", MAX_PIXELS)
    assert image.mode == "RGB" and sorted(image.size) == [16, 24], name


def test_every_corrupt_file_is_decoded_or_refused_as_the_clients_error() -> None:
    refused = 0
    for name, data in corrupt_files().items():
        try:
            assert decode_image(data, "images.0", MAX_PIXELS).mode == "RGB", name
        except InvalidRequest as error:
            assert error.field == "images.0", name
            refused += 1
    assert refused >= len(hostile_files())  # the corpus does reach the decoder's error paths


@pytest.mark.parametrize("name", ["png-ztxt-inflates", "png-itxt-inflates", "png-exif-not-tiff"])
def test_metadata_pillow_refuses_with_value_or_syntax_errors(name: str) -> None:
    with pytest.raises(InvalidRequest):
        decode_image(hostile_files()[name], "image", MAX_PIXELS)
