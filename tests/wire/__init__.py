"""Local HTTP servers speaking provider wire protocols (OpenAI, Replicate, Supabase Auth, Shopify Admin) for tests."""

from tests.wire.base import WireServer
from tests.wire.image_server import ImageServer
from tests.wire.openai_server import OpenAIServer
from tests.wire.replicate_server import ReplicateServer
from tests.wire.shopify_admin import ShopifyAdminServer
from tests.wire.supabase_auth import SupabaseAuthServer

__all__ = ["ImageServer", "OpenAIServer", "ReplicateServer", "ShopifyAdminServer", "SupabaseAuthServer", "WireServer"]
