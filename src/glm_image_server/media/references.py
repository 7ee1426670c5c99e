"""A request's reference locators -> decoded images: URLs and data URIs through the guarded fetcher,
`stored:<key>` (uploads, our own results given back) straight from storage. Runs in the worker: all of a
request's references at once, each under its own deadline, on an event loop of the loader's own thread."""

from __future__ import annotations

import asyncio
import threading

from PIL import Image

from ..core.request import STORED, InvalidRequest
from .fetch import ImageFetcher
from .inputs import decode_image
from .storage import Storage


class ReferenceLoader:
    def __init__(self, fetcher: ImageFetcher, storage: Storage) -> None:
        self.fetcher, self.storage = fetcher, storage
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="fetch-loop", daemon=True).start()

    def load(self, locators: tuple[str, ...]) -> tuple[Image.Image, ...]:
        """All of a request's references, decoded (blocking); InvalidRequest names the first bad one."""
        return asyncio.run_coroutine_threadsafe(self._all(locators), self._loop).result()

    async def _all(self, locators: tuple[str, ...]) -> tuple[Image.Image, ...]:
        loads = [self._one(locator, f"references[{i}]") for i, locator in enumerate(locators)]
        return tuple(await asyncio.gather(*loads))

    async def _one(self, locator: str, field: str) -> Image.Image:
        if not locator.startswith(STORED):
            return await self.fetcher.fetch(locator, field)
        key = locator.removeprefix(STORED)
        if not await asyncio.to_thread(self.storage.exists, key):
            raise InvalidRequest(
                field, "the stored image (an upload or a result) has expired or does not exist", "a kept one"
            )
        data = await asyncio.to_thread(self.storage.read, key)
        return await asyncio.to_thread(decode_image, data, field, self.fetcher.max_pixels)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
