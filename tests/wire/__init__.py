"""Local HTTP servers speaking provider wire protocols (OpenAI, Replicate) for tests."""

from tests.wire.base import WireServer
from tests.wire.image_server import ImageServer
from tests.wire.openai_server import OpenAIServer
from tests.wire.replicate_server import ReplicateServer

__all__ = ["ImageServer", "OpenAIServer", "ReplicateServer", "WireServer"]
