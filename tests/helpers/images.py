"""Small images and the ways clients send and receive them."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image


def png_bytes(size=(80, 60), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def download(url: str) -> tuple[bytes, Image.Image]:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.content, Image.open(io.BytesIO(response.content))


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))
