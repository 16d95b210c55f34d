"""`python -m services.pipeline`: the MMA pipeline worker."""

from libs import startup

if __name__ == "__main__":
    startup.begin()  # before anything heavy is imported: see libs/startup.py
    from libs.service import run_service
    from services.pipeline.app import setup

    run_service("pipeline", setup)
