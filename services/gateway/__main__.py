"""`python -m services.gateway`: the HTTP surface on the bus (MMA and legacy routes, SSE, uploads, webhooks)."""

from libs import startup

if __name__ == "__main__":
    startup.begin()  # before anything heavy is imported: see libs/startup.py
    from libs.service import run_service
    from services.gateway.app import setup

    run_service("gateway", setup)
