"""``~/encode_texts``: text embeddings from the node's engine, answered without stalling the node's executor.

Encoding a text costs up to seconds on a CPU (every template through the text tower). The node's executor
runs its image subscriptions, parameters and lifecycle services, and its EventsExecutor does not run
coroutine service callbacks, so a callback that waited for an encoding would stall all of them, frames
included. The service therefore lives on a companion node in the same context (``<node>_texts``, no
parameter services), spun by a thread of its own, under the segmentation node's own service name
(``~/encode_texts`` resolved by that node, remappings included). Requests are answered one at a time, in
order; the encoding runs on a short-lived thread (see torch_threads). It exists for the node's whole
life, so an unconfigured node answers too: with a refusal.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from ..model.errors import EncodingCancelled
from ..srv import EncodeTexts
from .torch_threads import Interrupted, run_on_short_lived_thread

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleNode

# (texts, cancelled) -> ((N, E) float32 unit rows, logit scale); raises with the reason to refuse
TextEncoder = Callable[[Sequence[str], Callable[[], bool]], tuple[np.ndarray, float]]
SERVICE = "~/encode_texts"
SPIN_PERIOD_S = 0.1
CLOSE_TIMEOUT_S = 2.0


class TextEncodingService:
    """``owner``'s ``~/encode_texts``, answered by ``encode`` on a thread beside the owner's executor."""

    def __init__(self, owner: LifecycleNode, encode: TextEncoder) -> None:
        self._encode = encode
        self._closing = threading.Event()
        self._closed = False
        name = owner.resolve_service_name(SERVICE)
        self._node = Node(f"{owner.get_name()}_texts", namespace=owner.get_namespace(), context=owner.context,
                          use_global_arguments=False, start_parameter_services=False)
        self._node.create_service(EncodeTexts, name, self._handle)
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="encode-texts-service", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering (an encoding under way is cancelled at its next batch); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        self._executor.shutdown(timeout_sec=0)
        self._node.destroy_node()

    def _spin(self) -> None:
        while not self._closing.is_set() and self._node.context.ok():
            try:
                self._executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            except Exception:  # noqa: BLE001 - the context went down under us: the process is ending
                return

    def _handle(self, request: EncodeTexts.Request, response: EncodeTexts.Response) -> EncodeTexts.Response:
        texts = list(request.texts)
        try:
            embeddings, logit_scale = run_on_short_lived_thread(
                lambda: self._encode(texts, self._closing.is_set), "vocabulary-encoder", self._closing.is_set)
        except Exception as error:  # noqa: BLE001 - every failure is the caller's answer, never the node's end
            response.success = False
            response.message = refusal(error)
            return response
        response.success = True
        response.message = f"{len(texts)} texts encoded"
        response.dimension = int(embeddings.shape[1])
        response.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32).ravel()
        response.logit_scale = float(logit_scale)
        return response


def refusal(error: Exception) -> str:
    """Why a request was refused, in words: a bad text list says what is wrong with it."""
    if isinstance(error, ValueError):
        return f"texts refused: {error}"
    if isinstance(error, (Interrupted, EncodingCancelled)):
        return "not encoded: the node is stopping"
    if isinstance(error, RuntimeError):  # the node is not configured, or the model could not run
        return str(error)
    return f"not encoded: {type(error).__name__}: {error}"
