"""`python -m services.billing`: prices, debits, refunds, top-ups and the stuck sweeper."""

from libs.service import run_service
from services.billing.app import setup

if __name__ == "__main__":
    run_service("billing", setup)
