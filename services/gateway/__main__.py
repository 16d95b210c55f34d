"""`python -m services.gateway`: the HTTP surface on the bus (MMA and legacy routes, SSE, uploads, webhooks)."""

from libs.service import run_service
from services.gateway.app import setup

if __name__ == "__main__":
    run_service("gateway", setup)
