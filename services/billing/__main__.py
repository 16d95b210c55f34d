"""`python -m services.billing`: prices, debits, refunds, top-ups and the stuck sweeper."""

from libs import startup

if __name__ == "__main__":
    startup.begin()  # before anything heavy is imported: see libs/startup.py
    from libs.service import run_service
    from services.billing.app import setup

    run_service("billing", setup)
