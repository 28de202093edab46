"""Text embeddings for the map from the segmentation node's ``~/encode_texts``, awaited without blocking.

The mapping node runs a SingleThreadedExecutor, which runs coroutine callbacks: a service callback awaits
``embeddings`` while the executor goes on integrating frames. The client, its timers and the callbacks
that await it share one reentrant callback group (a mutually exclusive one would hold the answer back
until the waiting callback ended: a deadlock). A request not answered within its timeout is abandoned
and refused with the reason, as is a missing service (the timeout counts on a steady clock: a paused
bag's /clock does not stretch it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType

from ..srv import EncodeTexts

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleNode


class TextsRefused(RuntimeError):
    """No embeddings: the service is missing, slow or refused; the message says which."""


class TextClient:
    def __init__(self, node: LifecycleNode, service: str, group: ReentrantCallbackGroup) -> None:
        self._node = node
        self._group = group
        self.service = service
        self._client = node.create_client(EncodeTexts, service, callback_group=group)

    def ready(self) -> bool:
        return self._client.service_is_ready()

    async def embeddings(self, texts: Sequence[str], timeout_s: float) -> np.ndarray:
        """(len(texts), E) float32 unit rows; raises TextsRefused."""
        if not self._client.service_is_ready():
            raise TextsRefused(f"no text embeddings: the service {self.service} is not available (is the "
                               f"segmentation node running and configured? encode_texts_service names it)")
        future = self._client.call_async(EncodeTexts.Request(texts=list(texts)))
        timer = None

        def expire() -> None:
            timer.cancel()
            if not future.done():
                self._client.remove_pending_request(future)
                future.cancel()

        timer = self._node.create_timer(timeout_s, expire, callback_group=self._group,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))
        try:
            response = await future
        finally:
            self._node.destroy_timer(timer)
        if future.cancelled() or response is None:
            raise TextsRefused(f"no text embeddings: {self.service} did not answer within {timeout_s:g} s "
                               f"(encode_timeout_s)")
        if not response.success:
            raise TextsRefused(f"{self.service} refused the texts: {response.message}")
        values = np.asarray(response.embeddings, np.float32)
        if response.dimension < 1 or values.size != len(texts) * response.dimension:
            raise TextsRefused(f"{self.service} answered {values.size} values for {len(texts)} texts of "
                               f"dimension {response.dimension}")
        return values.reshape(len(texts), response.dimension)

    def destroy(self) -> None:
        self._node.destroy_client(self._client)
