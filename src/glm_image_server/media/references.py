"""A request's reference locators -> decoded images: URLs and data URIs through the guarded fetcher,
`stored:<key>` uploads straight from our storage. Runs in the worker, several fetches at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from ..types import STORED, InvalidRequest
from .fetch import ImageFetcher
from .inputs import decode_image
from .storage import LocalStorage


class ReferenceLoader:
    def __init__(self, fetcher: ImageFetcher, storage: LocalStorage, workers: int) -> None:
        self.fetcher, self.storage = fetcher, storage
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")

    def load(self, locators: tuple[str, ...]) -> tuple[Image.Image, ...]:
        """All of a request's references, decoded; raises InvalidRequest naming the first bad one."""
        fields = [f"references[{i}]" for i in range(len(locators))]
        return tuple(self._pool.map(self._one, locators, fields))

    def _one(self, locator: str, field: str) -> Image.Image:
        if not locator.startswith(STORED):
            return self.fetcher.fetch(locator, field)
        path = self.storage.path(locator.removeprefix(STORED))
        if path is None:
            raise InvalidRequest(field, "the uploaded image has expired or does not exist", "a recent upload")
        return decode_image(path.read_bytes(), field, self.fetcher.max_pixels)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
