"""Only for `routes/billing.py` until its handlers move to resource modules: use `generations.views`."""

from services.gateway.generations.views import generation_out as generation_out
from services.gateway.generations.views import iso as iso
