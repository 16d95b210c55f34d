"""`python -m services.pipeline`: the MMA pipeline worker."""

from libs.service import run_service
from services.pipeline.app import setup

if __name__ == "__main__":
    run_service("pipeline", setup)
